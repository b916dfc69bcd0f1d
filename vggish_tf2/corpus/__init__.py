"""The corpus run as small stages, in the order data goes through them.

    from vggish_tf2.corpus import embed_corpus
    summary = embed_corpus(["corpus/"], out_dir="embeddings", output_format="npz")

- ``run``: :func:`embed_corpus`, top to bottom: lock -> inputs -> engine (loads the model) ->
  run configuration -> plan -> writer -> results, written and recorded -> summary.
- ``plan``: which inputs to embed, which are already done (resume), where each output goes.
- ``run_config``: the model's fingerprint and ``run_config.json`` (settings that decide the bytes).
- ``decode``: one file -> blocks of example windows; the decode-ahead threads of the local engine.
- ``embed``: the local device stage: blocks of many files packed into full device steps -> one
  result per file, in input order.
- ``engine``: what an engine hands the writer (:class:`Embedded`), and the facts about the model
  it knows before running (:class:`ModelFacts`). ``local``: threads and this process's device;
  ``ray_engine``: Ray Data.
- ``write``, ``shards``, ``pooling``: outputs, per file or in shards, and one vector per file.
- ``manifest``, ``lock``, ``summary``: the manifest (the run's checkpoint), the output directory's
  lock, and what the run did.

Nothing here imports TensorFlow until an engine loads the model.
"""
_LAZY = {"embed_corpus": "vggish_tf2.corpus.run", "RunInterrupted": "vggish_tf2.corpus.run",
         "RunStopped": "vggish_tf2.corpus.run"}


def __getattr__(name: str):
    # Resolved on first use (PEP 562): importing one stage does not import the whole run.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggish_tf2.corpus' has no attribute {name!r}")


__all__ = ["RunInterrupted", "RunStopped", "embed_corpus"]
