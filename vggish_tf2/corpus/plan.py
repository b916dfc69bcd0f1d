"""Which inputs a run embeds: each input's output path, and resume (what is already done).

An input is done, and not redone, when its last manifest record is ``ok`` or ``skipped``, its
size and mtime are those recorded, and (for ``ok``) the output the record names still exists and
is not empty. With ``layout="files"`` that output must also be the one this run would write; with
``layout="shards"`` it is the shard the record names (relative to ``out_dir``). Failed inputs are
always retried. An input whose output path is refused (it would leave ``out_dir``) is ``refused``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from vggish_tf2 import outputs
from vggish_tf2.errors import VGGishError
from vggish_tf2.inputs import InputFile
from vggish_tf2.options import RunOptions


@dataclasses.dataclass(frozen=True)
class Task:
    """One input to embed, and where its output goes (None with layout="shards": a shard)."""

    item: InputFile
    output: Path | None
    output_relative: str | None  # output's path relative to out_dir, POSIX: the manifest's "output"
    signature: tuple[int, int] | None  # (size, mtime_ns) when it could be read

    @property
    def input_size(self) -> int | None:
        return self.signature[0] if self.signature is not None else None

    @property
    def input_mtime_ns(self) -> int | None:
        return self.signature[1] if self.signature is not None else None


@dataclasses.dataclass(frozen=True)
class Plan:
    tasks: list[Task]  # to embed, in input order
    refused: list[tuple[Task, str]]  # (task, error): the output path is refused; recorded as failed
    already_done: int  # inputs done in an earlier run


def input_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def is_done(record: dict | None, *, out_dir: Path, output_relative: str | None, signature,
            layout: str = "files") -> bool:
    """Whether ``record`` (the input's last manifest line) says the input needs no new run."""
    if record is None or record.get("status") not in ("ok", "skipped"):
        return False
    if signature is not None and record.get("input_size") is not None:
        if (record.get("input_size"), record.get("input_mtime_ns")) != signature:
            return False  # the input changed since
    if record["status"] == "skipped":
        return True
    recorded = record.get("output")
    if layout == "files" and recorded != output_relative:
        return False
    if not isinstance(recorded, str):
        return False
    try:
        return (out_dir / recorded).stat().st_size > 0
    except OSError:
        return False


def plan_tasks(items: Sequence[InputFile], out_dir: Path, options: RunOptions, previous_records: dict[str, dict],
               suffix: str) -> Plan:
    """The run's tasks; ``previous_records``: each input's last manifest record (empty to redo all)."""
    tasks: list[Task] = []
    refused: list[tuple[Task, str]] = []
    already_done = 0
    for item in items:
        signature = input_signature(item.path)
        if options.layout == "shards":
            output, output_relative = None, None
        else:
            try:
                output = outputs.safe_output_path(out_dir, item.relative, suffix)
            except VGGishError as e:
                refused.append((Task(item, None, None, signature), str(e)))
                continue
            output_relative = output.relative_to(out_dir.resolve()).as_posix()
        if is_done(previous_records.get(item.relative), out_dir=out_dir, output_relative=output_relative,
                   signature=signature, layout=options.layout):
            already_done += 1
        else:
            tasks.append(Task(item, output, output_relative, signature))
    return Plan(tasks=tasks, refused=refused, already_done=already_done)


__all__ = ["Plan", "Task", "input_signature", "is_done", "plan_tasks"]
