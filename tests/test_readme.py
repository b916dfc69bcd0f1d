"""README.md's code blocks, run as tests: every example works as written.

The blocks are read from README.md when tests are collected, so a section added later is picked
up with no change here. Each test is named after the README line it checks, e.g.
``test_python_block[README.md:92]``.

``python`` blocks run as scripts, each in a fresh interpreter (the suite's), in an otherwise empty
temporary directory whose ``models/vggish`` links to the session's synthetic export
(tests/conftest.py), with VGGISH_MODEL_DIR unset: what a user has after ``bash scripts/demo.sh``.
A block must be self-contained (it makes its own audio) and exit 0.

``sh`` blocks: every command line (``\\`` continuations joined, ``#`` comments dropped) must match
one of the rules in ``classify``:
  - ``vggish-tf2 ...`` lines run, in their order, through ``vggish_tf2.cli.main`` (what the
    ``vggish-tf2`` script calls) in one fresh interpreter per block, in a directory holding
    ``models/vggish`` and a small generated corpus (``corpus/``, ``extra/clip.mp3``, ``files.txt``;
    see ``_write_corpus``); each must exit 0.
  - Lines that cannot run offline, or are not cheap, get a cheap check instead and are reported
    as skipped with the reason (``pytest -ra`` lists them): ``pip install -e '.[x]'`` (the extras
    exist in pyproject.toml), ``bash scripts/demo.sh`` (``bash -n``, and it reads the export
    metadata file the library writes), the test command (.ci/run runs each of its ``&&`` steps,
    ``pip -q`` aside), ``python -m convert.checkpoint_to_savedmodel ...`` (its arguments parse; a
    conversion takes about a minute on 2 cores, and tests/test_converter.py runs the converter's
    command line).
  - A line that no rule knows fails: add a rule here, or mark the block.

Other fences (``text``, ``json``, ...) hold output or data and are not run; an unknown language fails.

Opting a block out takes an HTML comment on the line right before its opening fence:

    <!-- readme-test: skip (needs network) -->

The block is then skipped with that reason, listed by ``pytest -ra``. Any other ``readme-test:``
comment fails, so nothing is skipped silently.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

PYTHON_LANGUAGES = {"python", "py"}
SHELL_LANGUAGES = {"sh", "bash", "shell"}
NOT_RUN_LANGUAGES = {"text", "json", "jsonl", "toml", "yaml", "console", "output", ""}  # output and data

FENCE = re.compile(r"^```\s*(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
SKIP_MARKER = re.compile(r"^skip \((.+)\)$")
TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: str | None  # the readme-test comment right before the fence, if any

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


@dataclass(frozen=True)
class ShellLine:
    line: int  # 1-based line where the command starts
    text: str

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def read_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1).lower()
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"README.md:{start + 1}: code block never closed")
        previous = lines[start - 1].strip() if start > 0 else ""
        marker = MARKER.match(previous)
        blocks.append(Block(start + 1, language, "\n".join(lines[start + 1:end]) + "\n", marker and marker.group(1)))
        i = end + 1
    return blocks


def shell_lines(block: Block) -> list[ShellLine]:
    """Command lines of a shell block: continuations joined, comment-only and blank lines dropped."""
    commands, pending, first = [], "", None
    for offset, raw in enumerate(block.text.splitlines()):
        if first is None:
            first = block.line + 1 + offset
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text = (pending + raw).strip()
        if shlex.split(text, comments=True):
            commands.append(ShellLine(first, text))
        pending, first = "", None
    return commands


BLOCKS = read_blocks(README.read_text(encoding="utf-8"))


def _skip_reason(block: Block) -> str | None:
    if block.marker is None:
        return None
    match = SKIP_MARKER.match(block.marker)
    return match and match.group(1)


def _blocks(languages: set[str]) -> list[Block]:
    return [b for b in BLOCKS if b.language in languages]


# --- classification of shell lines ----------------------------------------------------------------
RUN = "run"


def _steps(line: str) -> list[tuple[str, ...]]:
    """The commands of a shell line split at `&&`, each without pip's -q."""
    steps, current = [], []
    for token in shlex.split(line, comments=True) + ["&&"]:
        if token == "&&":
            steps.append(tuple(current))
            current = []
        elif token != "-q":
            current.append(token)
    return [step for step in steps if step]


def _ci_steps() -> set[tuple[str, ...]]:
    return {step for line in (REPO / ".ci" / "run").read_text().splitlines() for step in _steps(line)}


def _check_extras(argv: list[str]) -> str:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set()
    for arg in argv[2:]:
        match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if match and match.group(1):
            named |= set(match.group(1).split(","))
    assert named <= extras, f"extras {sorted(named - extras)} are not in pyproject.toml ({sorted(extras)})"
    return f"extras {sorted(named)} exist" if named else "installs the package itself"


def _check_demo(argv: list[str]) -> str:
    from vggish_tf2.model import METADATA_ASSET

    script = REPO / argv[1]
    subprocess.run(["bash", "-n", str(script)], check=True)
    # The demo reads an export's metadata as JSON (no TF) to decide whether it may replace it.
    assert f'"assets" / "{METADATA_ASSET}"' in script.read_text(), f"{script}: reads another metadata file"
    return f"{argv[1]} parses (bash -n) and reads assets/{METADATA_ASSET}"


def _check_test_command(argv: list[str]) -> str:
    missing = [" ".join(step) for step in _steps(shlex.join(argv)) if step not in _ci_steps()]
    assert not missing, f".ci/run does not run these steps of the README's test command: {missing}"
    return ".ci/run runs each of its steps"


def _check_converter_arguments(argv: list[str]) -> str:
    from convert.checkpoint_to_savedmodel import parse_args

    parse_args(argv[3:])
    return "its arguments parse"


def classify(command: ShellLine) -> tuple[str, str, object] | None:
    """(RUN, "", None), or (reason it is not run, what is checked instead, check), or None: no rule."""
    argv = command.argv
    if argv[0] == "vggish-tf2":
        return RUN, "", None
    if argv[:2] == ["pip", "install"]:
        return "installs packages (network)", "the extras", _check_extras
    if argv[:2] == ["bash", "scripts/demo.sh"]:
        return "sets up .venv with pip (network, ~3 min); run by hand in a fresh clone", "bash -n", _check_demo
    if "pytest" in argv and "venv" in argv:
        return "it is this test suite (and installs with pip)", ".ci/run", _check_test_command
    if argv[:3] == ["python", "-m", "convert.checkpoint_to_savedmodel"]:
        if "--download" in argv:
            return "needs the network", "arguments", _check_converter_arguments
        return ("a conversion takes about a minute on 2 cores; tests/test_converter.py runs the converter's command line",
                "arguments", _check_converter_arguments)
    return None


def _not_run_lines() -> list[ShellLine]:
    lines = []
    for block in _blocks(SHELL_LANGUAGES):
        if _skip_reason(block) is None:
            lines += [c for c in shell_lines(block) if (classify(c) or ("",))[0] != RUN]
    return lines


def _shell_blocks_that_run() -> list[Block]:
    return [b for b in _blocks(SHELL_LANGUAGES)
            if _skip_reason(b) is not None or any((classify(c) or ("",))[0] == RUN for c in shell_lines(b))]


# --- working directories ----------------------------------------------------------------------------
def _workdir(tmp_path: Path, exported_model: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vggish").symlink_to(exported_model, target_is_directory=True)
    return tmp_path


def _tone(seconds: float, rate: int, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * hz * t)
    return np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else mono


def _write_corpus(root: Path) -> None:
    """The inputs the README's command lines name: corpus/a/b.wav, FLACs, extra/clip.mp3, files.txt."""
    (root / "corpus" / "a").mkdir(parents=True)
    (root / "extra").mkdir()
    sf.write(root / "corpus" / "a" / "b.wav", _tone(2.5, 44100, 440, channels=2), 44100, subtype="PCM_16")
    sf.write(root / "corpus" / "a" / "c.flac", _tone(1.5, 48000, 660), 48000, subtype="PCM_24")
    sf.write(root / "corpus" / "d.flac", _tone(2.0, 16000, 1000), 16000)
    sf.write(root / "corpus" / "short.wav", _tone(0.5, 16000, 220), 16000)  # under one example
    sf.write(root / "extra" / "clip.mp3", _tone(2.0, 44100, 330), 44100, format="MP3")
    (root / "files.txt").write_text("# inputs, one a line\ncorpus/a/b.wav\nextra/clip.mp3\n")


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VGGISH_MODEL_DIR"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_environment(), capture_output=True,
                          text=True, timeout=TIMEOUT_SECONDS)


# Runs `vggish-tf2 ARGS` lines in order through the script's entry point; stops at the first that fails.
CLI_DRIVER = """
import shlex, sys
from vggish_tf2 import cli
for line in sys.argv[1:]:
    print(f"$ {line}", flush=True)
    status = cli.main(shlex.split(line, comments=True)[1:])
    sys.stdout.flush()
    if status != 0:
        sys.exit(f"exit status {status}: {line}")
"""


# --- tests --------------------------------------------------------------------------------------------
def test_readme_has_blocks_of_both_kinds():
    assert _blocks(PYTHON_LANGUAGES) and _blocks(SHELL_LANGUAGES)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block_language_and_marker_are_understood(block):
    known = PYTHON_LANGUAGES | SHELL_LANGUAGES | NOT_RUN_LANGUAGES
    assert block.language in known, f"{block.id}: ```{block.language} blocks are neither run nor known as output"
    if block.marker is not None:
        assert _skip_reason(block), f"{block.id}: unknown marker <!-- readme-test: {block.marker} -->"


def test_every_marker_sits_right_before_a_block():
    lines = README.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("<!--") and "readme-test" in line:
            assert MARKER.match(line.strip()), f"README.md:{number}: malformed marker {line!r}"
            following = lines[number] if number < len(lines) else ""
            assert FENCE.match(following), f"README.md:{number}: a readme-test marker must be right before a ``` fence"


@pytest.mark.parametrize("block", _blocks(PYTHON_LANGUAGES), ids=lambda b: b.id)
def test_python_block(block, tmp_path, exported_model):
    if reason := _skip_reason(block):
        pytest.skip(f"{block.id}: marked: {reason}")
    workdir = _workdir(tmp_path, exported_model)
    (workdir / "readme_block.py").write_text(block.text)
    result = _run(["readme_block.py"], workdir)
    assert result.returncode == 0, (f"{block.id} failed (exit {result.returncode}):\n{block.text}\n"
                                    f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}")


@pytest.mark.parametrize("block", _shell_blocks_that_run(), ids=lambda b: b.id)
def test_shell_block(block, tmp_path, exported_model):
    if reason := _skip_reason(block):
        pytest.skip(f"{block.id}: marked: {reason}")
    workdir = _workdir(tmp_path, exported_model)
    _write_corpus(workdir)
    commands = [c.text for c in shell_lines(block) if (classify(c) or ("",))[0] == RUN]
    result = _run(["-c", CLI_DRIVER, *commands], workdir)
    assert result.returncode == 0, (f"{block.id} failed:\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-5000:]}")
    for command in commands:
        assert f"$ {command}" in result.stdout


@pytest.mark.parametrize("command", _not_run_lines(), ids=lambda c: c.id)
def test_shell_line_not_run(command):
    rule = classify(command)
    assert rule is not None, (f"{command.id}: no rule for `{command.text}`: add one to tests/test_readme.py "
                              "or mark the block <!-- readme-test: skip (why) -->")
    reason, _, check = rule
    checked = check(command.argv)
    shown = re.sub(r"\s+#.*$", "", command.text)
    pytest.skip(f"{command.id}: `{shown}` not run: {reason}; checked: {checked}")
