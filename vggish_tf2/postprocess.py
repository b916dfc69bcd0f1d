"""AudioSet's post-processing in the graph: PCA whitening, clipping and 8-bit quantization.

pca = V (e - means); clip to [-2, 2]; q = (clipped + 2) * 255 / 4; uint8 by truncation.
Computed in float64 as the reference does (its PCA parameters are float64), so the truncation
lands on the same integer as the reference's NumPy code.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from vggish_tf2 import params
from vggish_tf2.errors import CheckpointError

PCA_SHAPES = {
    params.PCA_EIGEN_VECTORS_NAME: (params.EMBEDDING_SIZE, params.EMBEDDING_SIZE),
    params.PCA_MEANS_NAME: (params.EMBEDDING_SIZE,),
}


def check_pca_params(pca: Mapping[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """The PCA arrays as finite float64, or CheckpointError naming `source` and what is wrong."""
    problems = []
    for name, shape in PCA_SHAPES.items():
        if name not in pca:
            problems.append(f"missing {name!r}")
        elif tuple(np.shape(pca[name])) != shape:
            problems.append(f"{name!r} has shape {tuple(np.shape(pca[name]))}, expected {shape}")
        elif not np.issubdtype(np.asarray(pca[name]).dtype, np.floating):
            problems.append(f"{name!r} has dtype {np.asarray(pca[name]).dtype}, expected float")
        elif not np.all(np.isfinite(pca[name])):
            problems.append(f"{name!r} has non-finite values")
    if problems:
        raise CheckpointError(f"{source}: not VGGish PCA parameters ({'; '.join(problems)})")
    return {name: np.asarray(pca[name], dtype=np.float64) for name in PCA_SHAPES}


class Postprocessor(tf.Module):
    """Raw embeddings [B, 128] float32 -> AudioSet-style uint8 [B, 128]."""

    def __init__(self, pca: Mapping[str, np.ndarray]):
        super().__init__(name="postprocessor")
        checked = check_pca_params(pca, source="PCA parameters")
        self.pca_eigen_vectors = tf.Variable(
            checked[params.PCA_EIGEN_VECTORS_NAME], name=params.PCA_EIGEN_VECTORS_NAME, trainable=False
        )
        self.pca_means = tf.Variable(checked[params.PCA_MEANS_NAME], name=params.PCA_MEANS_NAME, trainable=False)

    def __call__(self, embeddings):
        return postprocess(self, embeddings)


def postprocess(module, embeddings):
    """Apply `module`'s PCA (a Postprocessor, or one restored from a SavedModel) and quantize."""
    centered = tf.cast(embeddings, tf.float64) - module.pca_means  # [B,128]
    # V @ (e - m) for each row e is (e - m) @ V^T for the batch.
    pca = tf.matmul(centered, module.pca_eigen_vectors, transpose_b=True)  # [B,128]
    clipped = tf.clip_by_value(pca, params.QUANTIZE_MIN_VAL, params.QUANTIZE_MAX_VAL)
    scale = 255.0 / (params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL)
    quantized = (clipped - params.QUANTIZE_MIN_VAL) * scale  # [0, 255]
    # Float -> integer casts truncate toward zero, as NumPy's astype(uint8) does on [0, 255].
    return tf.cast(quantized, tf.uint8)
