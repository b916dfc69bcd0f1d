"""Which files a run embeds: files, directories (walked recursively), globs and list files.

Each input gets its path relative to the inputs' common root (POSIX form): it names the input in
the manifest, the TFRecord ``video_id`` and the Parquet ``file`` column, and decides where its
output goes (the output tree mirrors the input tree).
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

from vggish_tf2.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Walked directories yield files with these extensions (any case); files named explicitly are
# always taken. soundfile reads the first group, PyAV (FFmpeg) the containers after it.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
    ".snd", ".caf", ".w64", ".rf64",
    ".m4a", ".m4b", ".aac", ".mp4", ".3gp", ".webm", ".mka", ".wma", ".ac3", ".amr",
})
_GLOB_CHARS = frozenset("*?[")


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input: its path as found, and its path relative to the inputs' common root (POSIX)."""

    path: Path
    relative: str


def _has_glob(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)


def _glob_root(pattern: str) -> str:
    """The leading directories of a glob pattern that hold no wildcard: where its tree starts."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        fixed.append(part)
    return os.path.abspath(os.path.join(*fixed)) if fixed else os.getcwd()


def _walk_audio(directory: str, *, exclude: str | None) -> list[str]:
    found = []

    def on_error(e: OSError) -> None:
        logger.warning("cannot list %s (%s)", e.filename, e.strerror or e)

    for current, dirs, files in os.walk(directory, onerror=on_error):
        # Sorted for a stable order; hidden entries (.git, macOS "._x.wav" resource forks) skipped;
        # the output directory is never walked, should it lie inside an input directory.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or os.path.abspath(os.path.join(current, d)) != exclude))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                found.append(os.path.join(current, name))
    return sorted(found, key=lambda path: Path(path).parts)  # a sorted tree listing, like `find | sort`


def read_list_file(list_file: PathLike) -> list[str]:
    """Paths in a list file: one a line, blank lines and lines starting with ``#`` ignored."""
    try:
        text = Path(list_file).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise InvalidArgumentError(f"{os.fspath(list_file)}: cannot read the list file ({e.strerror or e})") from e
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def expand_inputs(
    inputs: Iterable[PathLike],
    *,
    list_files: Sequence[PathLike] = (),
    exclude: PathLike | None = None,
) -> list[InputFile]:
    """Files to embed, in order, without duplicates, each with its path relative to the common root.

    A directory is walked recursively for :data:`AUDIO_EXTENSIONS`; a path that does not exist
    but holds ``*``, ``?`` or ``[`` is a glob (``**`` recursive); anything else is taken as a
    file, existing or not (a missing one fails in the run, with its reason in the manifest).
    Entries of list files are taken as files, literally. ``exclude`` (the output directory) is
    never walked.
    """
    if isinstance(inputs, (str, bytes, os.PathLike)):
        # Iterating a path yields its characters: "." and "/" would walk whole trees.
        raise InvalidArgumentError(f"inputs={inputs!r} must be a list of paths (one path goes in a list: [{inputs!r}])")
    excluded = os.path.abspath(exclude) if exclude is not None else None
    found: list[tuple[str, str]] = []  # (absolute path, root its tree is relative to)
    for raw in inputs:
        text = os.fspath(raw)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if not text:
            raise InvalidArgumentError("an input path is empty")
        absolute = os.path.abspath(text)
        if os.path.isdir(absolute):
            found.extend((path, absolute) for path in _walk_audio(absolute, exclude=excluded))
        elif not os.path.lexists(absolute) and _has_glob(text):
            root = _glob_root(text)
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                logger.warning("%s: the pattern matches nothing", text)
            for match in matches:
                match = os.path.abspath(match)
                if os.path.isdir(match):
                    found.extend((path, root) for path in _walk_audio(match, exclude=excluded))
                else:
                    found.append((match, root))
        else:
            found.append((absolute, os.path.dirname(absolute)))
    for list_file in list_files:
        for line in read_list_file(list_file):
            absolute = os.path.abspath(line)
            found.append((absolute, os.path.dirname(absolute)))

    unique: dict[str, str] = {}
    for path, root in found:
        unique.setdefault(path, root)
    if not unique:
        names = [os.fspath(i) for i in inputs] + [os.fspath(f) for f in list_files]
        raise InvalidArgumentError(f"no audio files found in {', '.join(map(str, names)) or 'the inputs'} "
                                   f"(directories are searched for: {' '.join(sorted(AUDIO_EXTENSIONS))})")
    common = os.path.commonpath(list(unique.values()))
    return [InputFile(Path(path), Path(os.path.relpath(path, common)).as_posix()) for path in unique]
