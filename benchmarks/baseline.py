"""The replaced system, rebuilt for comparison: how Google's vggish_inference_demo.py embeds a file.

Per file, one call each: soundfile reads int16 and divides by 32768 (vggish_input.wav_read),
channels are averaged, resampy's kaiser_best resamples to 16 kHz, the float64 NumPy front end
(convert.reference_numpy, our reading of mel_features.py) makes the [N, 96, 64] examples, and one
Session.run of the TF1 graph (convert.tf1_graph: tf.compat.v1 ops, a Session with a ConfigProto,
restored by a Saver) embeds them. No batching across files, no overlap of decoding and inference.

Written by us (no Google code), and kind to the baseline in one respect: the graph and the
Session are built once and reused for every file, where the demo script builds them per run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from convert import reference_numpy
from vggish_tf2 import params

STAGES = ("read", "resample", "frontend", "session")


class BaselineVGGish:
    """``embed_file(path)`` -> float32 [N, 128], the demo's way; ``seconds`` sums time per stage."""

    def __init__(self, checkpoint_path: str | os.PathLike, *, config=None):
        import tensorflow as tf

        from convert.tf1_graph import TF1Reference

        # The demo's session: a default ConfigProto (TF picks its thread pools).
        self._reference = TF1Reference(checkpoint_path, config=config if config is not None else tf.compat.v1.ConfigProto())
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.files = 0
        self.examples = 0

    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        import resampy
        import soundfile as sf

        t0 = time.perf_counter()
        data, rate = sf.read(os.fspath(path), dtype="int16")  # vggish_input.wav_read
        samples = data / 32768.0  # float64, as the reference
        if samples.ndim > 1:
            samples = np.mean(samples, axis=1)
        t1 = time.perf_counter()
        if rate != params.SAMPLE_RATE:
            samples = resampy.resample(samples, rate, params.SAMPLE_RATE, filter="kaiser_best")
        t2 = time.perf_counter()
        examples = reference_numpy.waveform_to_examples(samples)  # float64 [N, 96, 64]
        t3 = time.perf_counter()
        embedding = self._reference.embed(examples) if len(examples) else np.zeros((0, params.EMBEDDING_SIZE), np.float32)
        t4 = time.perf_counter()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.seconds[stage] += seconds
        self.files += 1
        self.examples += len(embedding)
        return embedding

    def embed_files(self, paths) -> list[np.ndarray]:
        return [self.embed_file(Path(p)) for p in paths]

    def close(self) -> None:
        self._reference.close()
