"""VGGish as a TF1 graph, the way the replaced system ran it: tf.compat.v1 ops, a Session, a Saver.

Built from plain ``tf.compat.v1`` ops (no tf_slim) with Google's names: the placeholder
'vggish/input_features' [None, 96, 64] float32, variables 'vggish/<layer>/weights|biases' as in
the checkpoint, and the output op 'vggish/embedding'. Tests and the baseline benchmark use it as
the reference the SavedModel must match; it is written out layer by layer, not from
``vggish_tf2.network.LAYERS``, so the two are independent readings of the spec.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from vggish_tf2 import params
from vggish_tf2.errors import CheckpointError, InvalidArgumentError

logger = logging.getLogger(__name__)

v1 = tf.compat.v1


def _conv(net: tf.Tensor, channels: int, scope: str) -> tf.Tensor:
    """3x3 stride-1 SAME convolution + bias + ReLU, variables '<scope>/weights', '<scope>/biases'."""
    with v1.variable_scope(scope):
        in_channels = int(net.shape[-1])
        weights = v1.get_variable(
            "weights", [3, 3, in_channels, channels], tf.float32, v1.zeros_initializer(), trainable=False
        )
        biases = v1.get_variable("biases", [channels], tf.float32, v1.zeros_initializer(), trainable=False)
        net = tf.nn.conv2d(net, weights, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.relu(tf.nn.bias_add(net, biases))


def _pool(net: tf.Tensor, scope: str) -> tf.Tensor:
    """2x2 stride-2 SAME max-pool."""
    return tf.nn.max_pool2d(net, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME", name=scope)


def _fully_connected(net: tf.Tensor, units: int, scope: str, *, relu: bool = True) -> tf.Tensor:
    with v1.variable_scope(scope):
        in_units = int(net.shape[-1])
        weights = v1.get_variable("weights", [in_units, units], tf.float32, v1.zeros_initializer(), trainable=False)
        biases = v1.get_variable("biases", [units], tf.float32, v1.zeros_initializer(), trainable=False)
        net = tf.nn.bias_add(tf.matmul(net, weights), biases)
        return tf.nn.relu(net) if relu else net


def build_tf1_graph() -> tuple[tf.Graph, tf.Tensor, tf.Tensor]:
    """A new graph holding VGGish; returns (graph, input placeholder, embedding tensor)."""
    graph = tf.Graph()
    with graph.as_default(), v1.variable_scope(params.VGGISH_SCOPE):
        features = v1.placeholder(
            tf.float32, shape=(None, params.NUM_FRAMES, params.NUM_BANDS), name="input_features"
        )  # [B,96,64]
        net = tf.reshape(features, [-1, params.NUM_FRAMES, params.NUM_BANDS, 1])  # [B,96,64,1]
        net = _conv(net, 64, "conv1")  # [B,96,64,64]
        net = _pool(net, "pool1")  # [B,48,32,64]
        net = _conv(net, 128, "conv2")  # [B,48,32,128]
        net = _pool(net, "pool2")  # [B,24,16,128]
        with v1.variable_scope("conv3"):
            net = _conv(net, 256, "conv3_1")  # [B,24,16,256]
            net = _conv(net, 256, "conv3_2")  # [B,24,16,256]
        net = _pool(net, "pool3")  # [B,12,8,256]
        with v1.variable_scope("conv4"):
            net = _conv(net, 512, "conv4_1")  # [B,12,8,512]
            net = _conv(net, 512, "conv4_2")  # [B,12,8,512]
        net = _pool(net, "pool4")  # [B,6,4,512]
        net = tf.reshape(net, [-1, 6 * 4 * 512])  # [B,12288], NHWC order
        with v1.variable_scope("fc1"):
            net = _fully_connected(net, 4096, "fc1_1")  # [B,4096]
            net = _fully_connected(net, 4096, "fc1_2")  # [B,4096]
        net = _fully_connected(net, params.EMBEDDING_SIZE, "fc2", relu=False)  # [B,128]
        embedding = tf.identity(net, name="embedding")
    return graph, features, embedding


class TF1Reference:
    """A Session over build_tf1_graph(), restored from a V1 or V2 checkpoint with a tf.compat.v1 Saver.

    Use as a context manager (or call close()):

        with TF1Reference("vggish_model.ckpt") as reference:
            embeddings = reference.embed(examples)  # [B, 96, 64] -> float32 [B, 128]
    """

    def __init__(self, checkpoint_path: str | os.PathLike, *, config: v1.ConfigProto | None = None):
        self.checkpoint_path = os.fspath(checkpoint_path)
        self.graph, self.input_tensor, self.output_tensor = build_tf1_graph()
        with self.graph.as_default():
            variables = v1.global_variables()
            saver = v1.train.Saver(var_list=variables)
        # Saver.restore into resource variables does not check shapes (a [64] bias would load into a
        # [128] variable), and its missing-key message names no variable: check everything first.
        _check_checkpoint(self.checkpoint_path, {v.op.name: (tuple(v.shape.as_list()), v.dtype.base_dtype) for v in variables})
        self.config = config if config is not None else v1.ConfigProto()
        self.session = v1.Session(graph=self.graph, config=self.config)
        try:
            with self.graph.as_default():  # restore in graph mode, where the Saver was built
                saver.restore(self.session, self.checkpoint_path)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, tf.errors.DataLossError, ValueError) as e:
            self.session.close()
            raise CheckpointError(f"{self.checkpoint_path}: cannot restore VGGish variables ({_first_line(e)})") from e
        logger.info("restored %d variables from %s into a TF1 session", len(variables), self.checkpoint_path)

    def embed(self, examples: np.ndarray) -> np.ndarray:
        """Log-mel examples [B, 96, 64] -> raw embeddings float32 [B, 128]."""
        x = np.asarray(examples)
        if x.ndim != 3 or x.shape[1:] != (params.NUM_FRAMES, params.NUM_BANDS):
            raise InvalidArgumentError(
                f"examples have shape {x.shape}; expected [batch, {params.NUM_FRAMES}, {params.NUM_BANDS}]"
            )
        return self.session.run(self.output_tensor, feed_dict={self.input_tensor: x.astype(np.float32)})

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "TF1Reference":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _check_checkpoint(path: str, expected: dict[str, tuple[tuple[int, ...], tf.DType]]) -> None:
    """Raise CheckpointError listing every missing, mis-shaped or mis-typed variable of ``path``."""
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(e)})") from e
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    missing = sorted(set(expected) - set(shapes))
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    for name, (shape, dtype) in sorted(expected.items()):
        if name in shapes and tuple(shapes[name]) != shape:
            problems.append(f"{name}: shape {tuple(shapes[name])}, expected {shape}")
        if name in dtypes and dtypes[name] != dtype:
            problems.append(f"{name}: dtype {dtypes[name].name}, expected {dtype.name}")
    if problems:
        raise CheckpointError(f"{path}: cannot restore VGGish variables ({'; '.join(problems)})")


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
