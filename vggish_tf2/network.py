"""The VGGish network as a tf.Module, with the checkpoint's variable names, NHWC, TF-Slim semantics.

Architecture as data: LAYERS lists each step in order; variables are created from it, and the
forward pass walks it. All convolutions 3x3 stride 1 SAME + ReLU; all pools 2x2 stride 2 SAME;
flatten in NHWC order (as the reference's tf.reshape does); fc2 has no activation.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import tensorflow as tf

from vggish_tf2 import params
from vggish_tf2.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Layer:
    kind: str  # "conv" | "pool" | "flatten" | "fc"
    scope: str = ""  # variable prefix without the leading 'vggish/', e.g. 'conv3/conv3_1'
    width: int = 0  # output channels / units
    relu: bool = True


LAYERS: tuple[Layer, ...] = (
    Layer("conv", "conv1", 64),  # [B,96,64,64]
    Layer("pool"),  # [B,48,32,64]
    Layer("conv", "conv2", 128),  # [B,48,32,128]
    Layer("pool"),  # [B,24,16,128]
    Layer("conv", "conv3/conv3_1", 256),  # [B,24,16,256]
    Layer("conv", "conv3/conv3_2", 256),  # [B,24,16,256]
    Layer("pool"),  # [B,12,8,256]
    Layer("conv", "conv4/conv4_1", 512),  # [B,12,8,512]
    Layer("conv", "conv4/conv4_2", 512),  # [B,12,8,512]
    Layer("pool"),  # [B,6,4,512]
    Layer("flatten"),  # [B,12288]
    Layer("fc", "fc1/fc1_1", 4096),  # [B,4096]
    Layer("fc", "fc1/fc1_2", 4096),  # [B,4096]
    Layer("fc", "fc2", params.EMBEDDING_SIZE, relu=False),  # [B,128]: 'vggish/embedding'
)


def _variable_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    channels, height, width = 1, params.NUM_FRAMES, params.NUM_BANDS
    for layer in LAYERS:
        prefix = f"{params.VGGISH_SCOPE}/{layer.scope}"
        if layer.kind == "conv":
            shapes[f"{prefix}/weights"] = (3, 3, channels, layer.width)
            shapes[f"{prefix}/biases"] = (layer.width,)
            channels = layer.width
        elif layer.kind == "pool":
            height, width = (height + 1) // 2, (width + 1) // 2
        elif layer.kind == "flatten":
            channels = height * width * channels
        else:
            shapes[f"{prefix}/weights"] = (channels, layer.width)
            shapes[f"{prefix}/biases"] = (layer.width,)
            channels = layer.width
    return shapes


# Every variable of Google's checkpoint, name -> shape (all float32).
VARIABLE_SHAPES: dict[str, tuple[int, ...]] = _variable_shapes()


def check_weights(weights: Mapping[str, np.ndarray], *, source: str) -> None:
    """Raise CheckpointError listing every missing, unexpected or mis-shaped variable."""
    missing = sorted(set(VARIABLE_SHAPES) - set(weights))
    unexpected = sorted(name for name in weights if name not in VARIABLE_SHAPES)
    misshaped = [
        f"{name}: {tuple(np.shape(weights[name]))}, expected {shape}"
        for name, shape in VARIABLE_SHAPES.items()
        if name in weights and tuple(np.shape(weights[name])) != shape
    ]
    wrong_dtype = [
        f"{name}: {np.asarray(weights[name]).dtype}, expected float32"
        for name in VARIABLE_SHAPES
        if name in weights and np.asarray(weights[name]).dtype != np.float32
    ]
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if misshaped:
        problems.append("wrong shape: " + "; ".join(misshaped))
    if wrong_dtype:
        problems.append("wrong dtype: " + "; ".join(wrong_dtype))
    if problems:
        raise CheckpointError(f"{source}: not a VGGish checkpoint ({' | '.join(problems)})")


def _attr(name: str) -> str:
    # 'vggish/conv3/conv3_1/weights' -> 'conv3_conv3_1_weights': attribute names in the object graph.
    return name[len(params.VGGISH_SCOPE) + 1 :].replace("/", "_")


class VGGishNetwork(tf.Module):
    """VGGish's weights as tf.Variables named as in the checkpoint, and its forward pass."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        super().__init__(name=params.VGGISH_SCOPE)
        check_weights(weights, source="weights")
        for var_name in VARIABLE_SHAPES:
            variable = tf.Variable(np.asarray(weights[var_name]), name=var_name, trainable=False)
            setattr(self, _attr(var_name), variable)

    def __call__(self, features, compute_dtype=None):
        return forward(self, features, compute_dtype=compute_dtype)


def weights_of(module) -> dict:
    """name -> tf.Variable of a network module, also of one restored from a SavedModel."""
    return {name: getattr(module, _attr(name)) for name in VARIABLE_SHAPES}


def forward(module, features, *, compute_dtype=None):
    """Log-mel examples [B, 96, 64] -> embeddings [B, 128] float32, with `module`'s variables.

    `compute_dtype` (float32 by default; float16/bfloat16 for mixed precision on GPUs) is the
    dtype of the convolutions and matmuls; the result is always float32.
    """
    dtype = tf.float32 if compute_dtype is None else tf.dtypes.as_dtype(compute_dtype)
    variables = weights_of(module)

    def var(layer: Layer, kind: str):
        return tf.cast(variables[f"{params.VGGISH_SCOPE}/{layer.scope}/{kind}"], dtype)

    x = tf.reshape(tf.cast(features, dtype), [-1, params.NUM_FRAMES, params.NUM_BANDS, 1])  # [B,96,64,1]
    for layer in LAYERS:
        if layer.kind == "conv":
            x = tf.nn.conv2d(x, var(layer, "weights"), strides=1, padding="SAME")
            x = tf.nn.relu(tf.nn.bias_add(x, var(layer, "biases")))
        elif layer.kind == "pool":
            x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME")
        elif layer.kind == "flatten":
            x = tf.reshape(x, [tf.shape(x)[0], -1])  # NHWC order, as the reference
        else:
            x = tf.matmul(x, var(layer, "weights")) + var(layer, "biases")
            if layer.relu:
                x = tf.nn.relu(x)
    return tf.cast(x, tf.float32)  # [B,128]


def copy_to_device(module, device_name: str):
    """A copy of `module`'s variables placed on `device_name`: one replica's weights."""
    import types

    with tf.device(device_name):
        copies = {_attr(name): tf.Variable(v, name=name, trainable=False) for name, v in weights_of(module).items()}
    return types.SimpleNamespace(**copies)
