"""Synthetic VGGish files in the released formats, for tests and the offline demo.

``write_synthetic_checkpoint(dir, seed=...)`` writes ``vggish_model.ckpt`` (TF1, old V1 single-file
format, the real variable names and shapes) and ``vggish_pca_params.npz`` (the released keys only).
The weights are seeded random numbers, scaled so activations stay alive and bounded through the
nine layers; the embeddings they give mean nothing. The files carry no mark of that (the formats
have no room for one): whoever writes them must say so, e.g. with SYNTHETIC_NOTICE.

``write_checkpoint(dir, weights, version=...)`` writes any dict of arrays as a V1 or V2 checkpoint,
which also makes the corrupt variants tests need (a missing variable, a wrong shape).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from convert import reference_numpy
from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError, OutputError

logger = logging.getLogger(__name__)

SYNTHETIC_NOTICE = "SYNTHETIC WEIGHTS: these are not VGGish embeddings"
CHECKPOINT_NAME = "vggish_model.ckpt"
PCA_PARAMS_NAME = "vggish_pca_params.npz"

# Log-mel inputs lie in about [-4.6, +5] with a mean near -2.3 and an RMS near 3 over the probe
# signals (silence sits at log(0.01) = -4.6), not the unit scale He initialisation assumes: conv1
# is scaled down by this RMS so its pre-activations start at unit scale like every later layer's.
INPUT_RMS = 3.0
BIAS_STDDEV = 0.01  # small seeded biases: nonzero, so a missing bias add shows up in comparisons
PCA_TARGET_STDDEV = 1.0  # PCA outputs of the probe set get this spread, so clip [-2, 2] keeps most


def synthetic_weights(seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 weights for every checkpoint variable, He-scaled (conv1 also / INPUT_RMS)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgumentError(f"seed={seed!r} must be a non-negative integer")
    rng = np.random.default_rng(int(seed))
    weights: dict[str, np.ndarray] = {}
    for name, shape in sorted(_variable_shapes().items()):  # sorted: independent of the table's order
        if name.endswith("/biases"):
            weights[name] = (BIAS_STDDEV * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
            continue
        fan_in = int(np.prod(shape[:-1]))  # 3*3*C_in for a conv, the input width for a dense layer
        stddev = np.sqrt(2.0 / fan_in)
        if name == "vggish/conv1/weights":
            stddev /= INPUT_RMS
        if name == "vggish/fc2/weights":
            stddev = np.sqrt(1.0 / fan_in)  # linear output layer: no ReLU to compensate for
        weights[name] = (np.float32(stddev) * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    return weights


def synthetic_pca_params(embeddings: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random orthogonal basis, scaled so the embeddings' PCA outputs have std ~1, and their mean.

    Returns (pca_eigen_vectors [128, 128] float64, pca_means [128] float64).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    size = params.EMBEDDING_SIZE
    if e.ndim != 2 or e.shape[1] != size or e.shape[0] < 2:
        raise InvalidArgumentError(f"embeddings have shape {e.shape}; expected [batch >= 2, {size}]")
    rng = np.random.default_rng([int(seed), 1])  # a stream apart from the weights'
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    q *= np.sign(np.diag(r))  # a uniformly random orthogonal matrix (Haar), not QR's sign convention
    means = e.mean(axis=0)
    spread = np.sqrt(np.mean((e - means) ** 2))  # RMS over all dims; an orthogonal Q keeps it
    if not spread > 0:
        raise InvalidArgumentError("embeddings are all identical; cannot scale PCA parameters")
    return q * (PCA_TARGET_STDDEV / spread), means


def write_checkpoint(
    out_dir: str | os.PathLike,
    weights: Mapping[str, np.ndarray],
    *,
    version: str = "V1",
    name: str = CHECKPOINT_NAME,
) -> Path:
    """Write ``weights`` (checkpoint name -> array) as a TF1 checkpoint; return the path to restore from.

    ``version="V1"``: one file ``out_dir/name`` (the released format). ``"V2"``: ``name.index`` and
    ``name.data-00000-of-00001``; the returned path is the prefix ``out_dir/name``.
    Any names, shapes and dtypes are written as given (so tests can write broken checkpoints).
    """
    import tensorflow as tf  # local: importing this module must stay cheap for the numpy-only paths

    if version not in ("V1", "V2"):
        raise InvalidArgumentError(f"version={version!r} must be 'V1' or 'V2'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    existing = [p for p in (path, Path(f"{path}.index")) if p.exists()]
    if existing:
        raise OutputError(f"{existing[0]}: already exists; refusing to overwrite a checkpoint")
    write_version = tf.compat.v1.train.SaverDef.V1 if version == "V1" else tf.compat.v1.train.SaverDef.V2
    graph = tf.Graph()
    with graph.as_default():
        feeds, variables = {}, {}
        for index, (var_name, value) in enumerate(sorted(weights.items())):
            value = np.asarray(value)
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape, name=f"value_{index}")
            variables[var_name] = tf.compat.v1.Variable(placeholder, name=f"var_{index}", trainable=False)
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(var_list=variables, write_version=write_version)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(session, str(path), write_meta_graph=False, write_state=False)
    logger.info("wrote %s checkpoint %s (%d variables)", version, path, len(weights))
    return path


def write_synthetic_checkpoint(out_dir: str | os.PathLike, *, seed: int) -> tuple[Path, Path]:
    """Write ``vggish_model.ckpt`` (V1) and ``vggish_pca_params.npz`` from ``seed``; return both paths.

    The PCA means are the mean raw embedding of the probe signals (reference_numpy.probe_signals)
    under these weights, and the eigenvectors a random rotation scaled so those signals' PCA
    outputs spread over the uint8 range. Same seed, same bytes.
    """
    out_dir = Path(out_dir)
    pca_path = out_dir / PCA_PARAMS_NAME
    if pca_path.exists():
        raise OutputError(f"{pca_path}: already exists; refusing to overwrite")
    weights = synthetic_weights(seed)
    embeddings = reference_numpy.forward(weights, reference_numpy.probe_examples())
    eigen_vectors, means = synthetic_pca_params(embeddings, seed=seed)
    ckpt_path = write_checkpoint(out_dir, weights, version="V1")
    _save_npz_atomically(pca_path, {params.PCA_EIGEN_VECTORS_NAME: eigen_vectors, params.PCA_MEANS_NAME: means})
    logger.warning("%s: %s (seed %d)", ckpt_path, SYNTHETIC_NOTICE, seed)
    return ckpt_path, pca_path


def _save_npz_atomically(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp_path, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _variable_shapes() -> dict[str, tuple[int, ...]]:
    """The runtime's table of checkpoint variables (one source of truth for names and shapes)."""
    from vggish_tf2.network import VARIABLE_SHAPES

    return {name: tuple(shape) for name, shape in VARIABLE_SHAPES.items()}
