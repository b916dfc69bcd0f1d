"""Embed a corpus (the old home of :func:`embed_corpus`; the run now lives in :mod:`vggish_tf2.corpus`).

    from vggish_tf2.pipeline import embed_corpus
    summary = embed_corpus(["corpus/"], out_dir="embeddings", output_format="npz")
    print(summary.format())

See :mod:`vggish_tf2.corpus.run` for what a run does: outputs, manifest, resume, errors, lock.
"""
from vggish_tf2.corpus.run import RunInterrupted, RunStopped, embed_corpus
from vggish_tf2.corpus.run_config import RUN_CONFIG_NAME, model_fingerprint
from vggish_tf2.corpus.summary import RunSummary
from vggish_tf2.inputs import AUDIO_EXTENSIONS, InputFile, expand_inputs, read_list_file

__all__ = [
    "AUDIO_EXTENSIONS",
    "InputFile",
    "RUN_CONFIG_NAME",
    "RunInterrupted",
    "RunStopped",
    "RunSummary",
    "embed_corpus",
    "expand_inputs",
    "model_fingerprint",
    "read_list_file",
]
