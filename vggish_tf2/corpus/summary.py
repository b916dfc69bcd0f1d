"""RunSummary: what a corpus run did, counted from its manifest records, and its closing text."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from vggish_tf2.corpus.manifest import MANIFEST_NAME
from vggish_tf2.errors import one_line
from vggish_tf2.progress import format_seconds


@dataclasses.dataclass
class RunSummary:
    """What a run did. ``files`` = ok + skipped + failed + already_done + not_done (inputs an
    interrupted or stopped run did not reach)."""

    out_dir: Path
    output_format: str
    files: int = 0
    ok: int = 0
    skipped: int = 0  # too short to give an example under short_clips="drop"
    failed: int = 0
    already_done: int = 0  # ok or skipped in an earlier run, not redone
    audio_seconds: float = 0.0  # of the inputs processed in this run
    examples: int = 0
    processing_seconds: float = 0.0  # from the first file to the last (model load excluded)
    wall_seconds: float = 0.0  # the whole call
    interrupted: bool = False
    stopped: str | None = None  # the error that stopped the run early (a bug), one line
    synthetic_weights: bool = False
    device: str = ""
    batch_size: int = 0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (input, one-line error)

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    def count(self, record: dict, *, path: Path | str | None = None) -> None:
        """Count one manifest record of this run. ``path``: the input as found, which the summary's
        failure line leaves out of the error (the manifest keeps the whole message)."""
        status = record["status"]
        self.audio_seconds += record.get("duration_seconds") or 0.0  # decoded, also when writing failed
        if status == "failed":
            self.failed += 1
            error = one_line(record.get("error"))
            self.failures.append((record["input"], error.removeprefix(f"{path}: ") if path is not None else error))
        elif status == "skipped":
            self.skipped += 1
        else:
            self.ok += 1
            self.examples += record.get("examples") or 0

    @property
    def not_done(self) -> int:
        """Inputs not reached: the run was interrupted or stopped before them (0 after a whole run)."""
        return max(0, self.files - self.ok - self.skipped - self.failed - self.already_done)

    @property
    def audio_hours(self) -> float:
        return self.audio_seconds / 3600.0

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.processing_seconds if self.processing_seconds > 0 else 0.0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.processing_seconds if self.processing_seconds > 0 else 0.0

    @property
    def exit_status(self) -> int:
        """0 when every input is ok, skipped or already done; 1 when any failed or the run was
        stopped by an error (130 if interrupted)."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.stopped else 0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        d.update(not_done=self.not_done, audio_hours=self.audio_hours, audio_seconds_per_second=self.audio_seconds_per_second,
                 examples_per_second=self.examples_per_second)
        return d

    def format(self, *, max_failures: int = 10) -> str:
        """The closing summary, a few lines of text."""
        # No synthetic-weights banner: the Embedder warns once when it loads such a model, and
        # every output's metadata records it.
        lines = []
        if self.interrupted:
            lines.append("INTERRUPTED: rerun the same command to resume")
        if self.stopped:
            lines.append("STOPPED by an error (see stderr); what finished is recorded: rerun the same command to resume")
        not_done = f", {self.not_done} not done" if self.not_done or self.interrupted or self.stopped else ""
        lines.append(
            f"files      {self.files} total: {self.ok} ok, {self.failed} failed, {self.skipped} skipped (too short), "
            f"{self.already_done} already done{not_done}"
        )
        lines.append(f"audio      {self.audio_hours:.3f} h ({self.audio_seconds:.1f} s), {self.examples} examples")
        lines.append(
            f"throughput {self.audio_seconds_per_second:.1f} audio s/s, {self.examples_per_second:.1f} examples/s"
            f" on {self.device or '?'} (batch {self.batch_size})"
        )
        lines.append(f"time       {format_seconds(self.wall_seconds)} wall ({self.wall_seconds:.1f} s; "
                     f"{self.processing_seconds:.1f} s embedding)")
        lines.append(f"output     {self.out_dir} ({self.output_format}); manifest {self.manifest_path.name}")
        for name, error in self.failures[:max_failures]:
            lines.append(f"failed     {name}: {error}")
        if len(self.failures) > max_failures:
            lines.append(f"failed     ... and {len(self.failures) - max_failures} more (see the manifest)")
        return "\n".join(lines)
