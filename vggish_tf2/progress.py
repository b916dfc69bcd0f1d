"""A one-line progress display on stderr for corpus runs: files, audio hours, rate, ETA.

No dependency: the line is redrawn in place with a carriage return, at most every
``min_interval_seconds``. It is off when asked (``--quiet``) or when the stream is not a
terminal (logs, pipes, CI), so redirected output never fills with redraws.

    progress = Progress()                 # enabled only if stderr is a TTY
    progress.start(total_files=1000, already_done=10)
    progress.advance(status="ok", audio_seconds=9.98, examples=10)
    progress.close()
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """A short human duration: 42s, 3m05s, 2h07m."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Progress of one run. Every method is a no-op when the display is disabled."""

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None, min_interval_seconds: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.min_interval_seconds = min_interval_seconds
        self.total_files = 0
        self.already_done = 0
        self.done = 0
        self.failed = 0
        self.audio_seconds = 0.0
        self.examples = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    def start(self, *, total_files: int, already_done: int = 0) -> None:
        """``total_files`` inputs in the run, of which ``already_done`` are skipped as done by an earlier run."""
        self.total_files = total_files
        self.already_done = already_done
        self._started = time.monotonic()
        self._draw(force=True)

    def advance(self, *, status: str, audio_seconds: float = 0.0, examples: int = 0) -> None:
        """One input finished with ``status`` (ok, skipped or failed)."""
        self.done += 1
        self.failed += status == "failed"
        self.audio_seconds += audio_seconds or 0.0
        self.examples += examples or 0
        self._draw(force=self.done + self.already_done >= self.total_files)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        finished = self.done + self.already_done
        parts = [f"{finished}/{self.total_files} files"]
        if self.failed:
            parts[0] += f" ({self.failed} failed)"
        parts.append(f"{self.audio_seconds / 3600:.2f} h audio")
        if self.done:
            parts.append(f"{self.audio_seconds / elapsed:.1f}x real time")
            parts.append(f"{self.examples / elapsed:.1f} ex/s")
            remaining = self.total_files - finished
            parts.append(f"ETA {format_seconds(remaining * elapsed / self.done)}")
        return "vggish-tf2: " + " | ".join(parts)

    def clear(self) -> None:
        """Blank the line (before something else is written to the same stream)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def close(self) -> None:
        """Leave the final line on screen and end it."""
        if self.enabled and self.total_files:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval_seconds:
            return
        self._last_draw = now
        text = self.line()
        padding = " " * max(0, self._width - len(text))  # wipe what a longer previous line left
        self.stream.write("\r" + text + padding)
        self.stream.flush()
        self._width = len(text)


__all__ = ["Progress", "format_seconds"]
