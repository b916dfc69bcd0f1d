"""What an embedder actor of the Ray engine runs: window rows -> embedded rows.

Each actor loads the model once, when Ray starts it, into an :class:`~vggish_tf2.embedder.Embedder`
with an explicit batch size and compile mode (never "auto": no actor measures its own), so every
actor, on every node, computes the numbers the driver recorded; an example's embedding does not
depend on its batch (vggish_tf2.step). No Ray here; TensorFlow only inside the actor.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from vggish_tf2 import errors, params
from vggish_tf2.errors import InternalError


@dataclasses.dataclass(frozen=True)
class ActorSettings:
    """What an embedder actor is built with, and the facts the driver expects it to have."""

    model_path: str
    device: str | None
    memory_fraction: float | None
    batch_size: int
    jit_compile: bool
    frontend_precision: str
    hop_seconds: float
    short_clips: str
    resampler: str
    verify_model_hashes: bool
    postprocess: bool = False  # add "postprocessed" (uint8 [128]) rows; the engine does it on the driver
    model_fingerprint: str | None = None  # the driver's export (vggish_tf2.hashing.export_fingerprint)


class EmbedderActor:
    """map_batches callable class: rows with a ``window`` (and an ``example`` number, -1 for a row
    not to compute) -> the same rows, their other columns as they came, with ``embedding``
    (float32 [128]) instead of ``window``, and ``postprocessed`` (uint8 [128]) when the settings
    ask for it. Loads the model once, when Ray starts the actor."""

    def __init__(self, settings: ActorSettings):
        from vggish_tf2.embedder import Embedder
        from vggish_tf2.hashing import export_fingerprint

        if settings.model_fingerprint is not None and Path(settings.model_path).is_dir():
            # Each node reads its own copy of the model: it must be the driver's, file for file
            # (its recorded hash list; the load below checks the files against it). No directory:
            # the Embedder says so (ModelNotFoundError).
            here = export_fingerprint(Path(settings.model_path), trust_recorded=settings.verify_model_hashes)
            if here != settings.model_fingerprint:
                raise errors.ModelError(f"{settings.model_path}: this node's export is not the driver's "
                                        f"({here}, the driver's {settings.model_fingerprint})")
        self.embedder = Embedder(
            settings.model_path, device=settings.device, memory_fraction=settings.memory_fraction,
            batch_size=settings.batch_size, jit_compile=settings.jit_compile,
            frontend_precision=settings.frontend_precision, hop_seconds=settings.hop_seconds,
            short_clips=settings.short_clips, resampler=settings.resampler, workers=1,
            verify_model_hashes=settings.verify_model_hashes)
        self.postprocess = settings.postprocess
        found = (self.embedder.frontend_precision, self.embedder.jit_compile, self.embedder.batch_size)
        expected = (settings.frontend_precision, settings.jit_compile, settings.batch_size)
        if found != expected:
            raise InternalError(f"an embedder actor runs (frontend_precision, jit_compile, batch_size)={found}, "
                                f"the run expects {expected} (this is a bug in vggish-tf2)")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        example = batch["example"]
        computed = example >= 0  # marker rows (files without windows) carry no window to compute
        embedding = np.zeros((len(example), params.EMBEDDING_SIZE), np.float32)
        if computed.any():
            embedding[computed] = self.embedder.embed_windows(batch["window"][computed])
        out = {name: column for name, column in batch.items() if name != "window"}
        out["embedding"] = embedding
        if self.postprocess:
            out["postprocessed"] = self.embedder.postprocess(embedding)
        return out


__all__ = ["ActorSettings", "EmbedderActor"]
