"""The local engine: decoding threads and this process's device (the default engine).

The Embedder decodes files ahead on its ``workers`` threads, packs their windows into full device
steps and returns one result per file, in input order (:mod:`vggish_tf2.corpus.embed`); here each
result gets its post-processed rows and becomes an :class:`~vggish_tf2.corpus.engine.Embedded`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

from vggish_tf2.corpus import pooling
from vggish_tf2.corpus.engine import Embedded, ModelFacts, TaskError
from vggish_tf2.options import RunOptions

if TYPE_CHECKING:
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.embedder import Embedder


class LocalEngine:
    """Loads the model in this process (or uses ``embedder``, already loaded) and embeds tasks in
    input order."""

    def __init__(self, options: RunOptions, embedder: "Embedder | None" = None):
        if embedder is None:
            from vggish_tf2.embedder import Embedder

            embedder = Embedder.from_options(options)
        self.embedder = embedder
        self.options = options
        self.facts = ModelFacts.of(embedder, files_verified=embedder.verify_model_hashes)
        self._postprocess = embedder.postprocess if options.postprocess and embedder.has_pca else None

    def results(self, tasks: Sequence["Task"]) -> Iterator[Embedded]:
        """One Embedded per task, in input order. An error that is not a file's fault stops the
        iteration as a :class:`TaskError` naming the task it happened at."""
        results = self.embedder.embed_files([task.item.path for task in tasks])
        try:
            for task in tasks:
                try:
                    result = next(results)
                    postprocessed = pooling.postprocessed_rows(result, pool=self.options.pool,
                                                               postprocess=self._postprocess)
                except Exception as e:  # noqa: BLE001 - not the file's fault: the run decides
                    raise TaskError(task, e) from e
                yield Embedded(task, result, postprocessed)
        finally:
            results.close()  # stops the decoding threads

    def close(self) -> None:
        self.embedder.log_stats()


__all__ = ["LocalEngine"]
