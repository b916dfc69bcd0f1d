"""corpus.local.LocalEngine: the model's facts, Embedded results in input order with their
post-processed rows, and a bug raised as a TaskError naming its task."""
import numpy as np
import pytest
import soundfile as sf

from vggish_tf2.corpus import pooling
from vggish_tf2.corpus.engine import ModelFacts, TaskError
from vggish_tf2.corpus.local import LocalEngine
from vggish_tf2.corpus.plan import Task
from vggish_tf2.inputs import InputFile
from vggish_tf2.options import RunOptions


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=12, workers=2)


@pytest.fixture
def tasks(tmp_path):
    made = []
    for name, seconds in (("a.wav", 2.0), ("short.wav", 0.5), ("bad.wav", None), ("c.wav", 3.0)):
        path = tmp_path / name
        if seconds is None:
            path.write_bytes(b"not audio at all")
        else:
            sf.write(path, 0.1 * np.random.default_rng(len(made)).standard_normal(int(seconds * 16000)), 16000)
        made.append(Task(InputFile(path, name), None, None, None))
    return made


def test_facts_are_the_embedders(embedder, exported_model):
    engine = LocalEngine(RunOptions(), embedder)
    assert engine.facts == ModelFacts.of(embedder, files_verified=True)
    assert engine.facts.model_path == str(exported_model) and engine.facts.batch_size == 12
    assert engine.facts.has_pca and engine.facts.synthetic_weights and engine.facts.hop_seconds == 0.96


def test_results_in_input_order_with_postprocessed_rows_for_ok_files(embedder, tasks):
    engine = LocalEngine(RunOptions(), embedder)
    embedded = list(engine.results(tasks))
    assert [e.task for e in embedded] == tasks
    assert [e.result.status for e in embedded] == ["ok", "skipped", "failed", "ok"]
    for e in embedded:
        if e.result.status == "ok":
            np.testing.assert_array_equal(e.postprocessed, embedder.postprocess(e.result.embedding))
            np.testing.assert_array_equal(e.result.embedding, embedder.embed_file(e.task.item.path))
        else:
            assert e.postprocessed is None


def test_pooled_and_unpostprocessed_results(embedder, tasks):
    pooled = list(LocalEngine(RunOptions(pool="mean"), embedder).results(tasks[:1]))[0]
    np.testing.assert_array_equal(pooled.postprocessed,
                                  embedder.postprocess(pooling.mean_embedding(pooled.result.embedding)))
    raw = list(LocalEngine(RunOptions(postprocess=False), embedder).results(tasks[:1]))[0]
    assert raw.postprocessed is None and raw.result.embedding.shape == (2, 128)


def test_a_bug_is_a_task_error_naming_the_task(embedder, tasks, monkeypatch):
    engine = LocalEngine(RunOptions(), embedder)

    def broken(rows):
        raise TypeError("bad operand")

    monkeypatch.setattr(engine, "_postprocess", broken)
    results = engine.results(tasks)
    with pytest.raises(TaskError, match=r"a\.wav: TypeError: bad operand") as caught:
        next(results)
    assert caught.value.task is tasks[0] and isinstance(caught.value.__cause__, TypeError)
