"""corpus.plan: each input's output path, and resume (which inputs are already done). No model."""
import json
import os

import pytest

from vggish_tf2.corpus.plan import Task, is_done, plan_tasks
from vggish_tf2.inputs import InputFile
from vggish_tf2.options import RunOptions


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.wav", "c.wav"):
        (root / name).write_bytes(b"RIFF" + name.encode())
    return [InputFile(root / name, name) for name in ("a.wav", "sub/b.wav", "c.wav")]


def record(item, status, **fields):
    st = item.path.stat()
    return {"input": item.relative, "status": status, "input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns,
            **fields}


def test_fresh_run_plans_every_input_with_its_mirrored_output(inputs, tmp_path):
    out = tmp_path / "out"
    plan = plan_tasks(inputs, out, RunOptions(), {}, ".npz")
    assert [t.output_relative for t in plan.tasks] == ["a.wav.npz", "sub/b.wav.npz", "c.wav.npz"]
    assert plan.tasks[1].output == (out / "sub" / "b.wav.npz").resolve()
    assert plan.refused == [] and plan.already_done == 0
    st = inputs[0].path.stat()
    assert plan.tasks[0].signature == (st.st_size, st.st_mtime_ns) == (plan.tasks[0].input_size, plan.tasks[0].input_mtime_ns)


def test_done_skipped_and_failed_inputs(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav.npz").write_bytes(b"x")
    previous = {"a.wav": record(inputs[0], "ok", output="a.wav.npz"),
                "sub/b.wav": record(inputs[1], "skipped"),
                "c.wav": record(inputs[2], "failed")}
    plan = plan_tasks(inputs, out, RunOptions(), previous, ".npz")
    assert plan.already_done == 2 and [t.item.relative for t in plan.tasks] == ["c.wav"]
    # The output gone, emptied, or named otherwise; the input changed: redone.
    (out / "a.wav.npz").write_bytes(b"")
    assert not is_done(previous["a.wav"], out_dir=out, output_relative="a.wav.npz", signature=plan.tasks[0].signature)
    (out / "a.wav.npz").write_bytes(b"x")
    assert not is_done(previous["a.wav"], out_dir=out, output_relative="a.wav.parquet", signature=None)
    os.utime(inputs[1].path, ns=(1, 1))
    assert plan_tasks(inputs, out, RunOptions(), previous, ".npz").already_done == 1


def test_a_path_that_would_leave_out_dir_is_refused(tmp_path):
    item = InputFile(tmp_path / "x.wav", "../escape.wav")
    plan = plan_tasks([item], tmp_path / "out", RunOptions(), {}, ".npz")
    assert plan.tasks == [] and len(plan.refused) == 1
    task, error = plan.refused[0]
    assert isinstance(task, Task) and task.output is None and "escape.wav" in error


def test_shards_have_no_own_output_and_are_done_when_their_shard_exists(inputs, tmp_path):
    out = tmp_path / "out"
    (out / "embeddings").mkdir(parents=True)
    options = RunOptions(output_format="parquet", layout="shards")
    shard = "embeddings/part-x-00000.parquet"
    previous = {"a.wav": record(inputs[0], "ok", output=shard, rows=[0, 2], layout="shards"),
                "sub/b.wav": record(inputs[1], "ok", output="embeddings/part-x-00001.parquet", rows=[0, 1])}
    (out / shard).write_bytes(b"PAR1")
    plan = plan_tasks(inputs, out, options, previous, ".parquet")
    assert plan.already_done == 1  # b's shard is missing: redone
    assert [(t.item.relative, t.output, t.output_relative) for t in plan.tasks] == [
        ("sub/b.wav", None, None), ("c.wav", None, None)]
    assert json.dumps(previous)  # records are plain JSON
