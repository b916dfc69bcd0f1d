"""Reliability (issue 5): a generated bad-input corpus through the real CLI process, kill -9 and
resume, a full disk, 10 000 files with flat memory, and misuse that must get a clear error.

The CLI runs in a subprocess (``python -m vggish_tf2``) so that a crash, a traceback or a kill is
the real thing. Fast by default; ``--run-slow`` adds 3 hours of silence, the 10-kill run and the
10 000-file load run (their figures are printed with ``-s`` and recorded in benchmarks/README.md).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reliability_corpus as corpus_kinds
from vggish_tf2 import audio, outputs, windows
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError, ModelError, ModelNotFoundError

CLI_BASE = ["--device", "cpu", "--batch-size", "16", "--workers", "2", "--short-clips", "drop", "--quiet"]
TEMPORARY = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{8}$", re.DOTALL)
SETPRIV = shutil.which("setpriv")


def cli_command(*args, drop_capabilities=False) -> list[str]:
    command = [sys.executable, "-m", "vggish_tf2", "embed", *map(os.fspath, args)]
    if drop_capabilities:
        # Root reads a mode-000 file through CAP_DAC_OVERRIDE. Without any capability, uid 0 is
        # just the owner of our root-owned files, and mode 000 denies it like any user.
        command = [SETPRIV, "--bounding-set", "-all", "--inh-caps", "-all", "--", *command]
    return command


def cli_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_cli(*args, drop_capabilities=False, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args, drop_capabilities=drop_capabilities), capture_output=True,
                          timeout=timeout, env=cli_env())


def can_deny_reading() -> bool:
    return os.geteuid() != 0 or SETPRIV is not None


def files_under(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes); symlinks are not followed."""
    found = {}
    for current, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(current) / name
            found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return found


def manifest_records(out_dir: Path) -> list[dict]:
    data = (out_dir / outputs.MANIFEST_NAME).read_bytes()
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]  # a torn last line is not a record


def assert_consistent(out_dir: Path) -> None:
    """No temporary; every ok record's output is there and whole; every output has an ok record."""
    records = manifest_records(out_dir)
    ok_outputs = {r["output"] for r in records if r["status"] == "ok"}
    present = {name for name in files_under(out_dir) if name not in (outputs.MANIFEST_NAME, "run_config.json")}
    assert not [n for n in present if TEMPORARY.match(Path(n).name)], "temporaries left behind"
    assert present == ok_outputs, (sorted(present - ok_outputs), sorted(ok_outputs - present))
    for name in present:
        assert outputs.read_npz(out_dir / name)["embedding"].shape[1] == 128


# --- 1. The bad-input corpus ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "corpus"
    cases = corpus_kinds.build_bad_corpus(root)
    if not can_deny_reading():  # root without setpriv: a mode-000 file is readable, so it is good
        cases = [c if c.name != "fs/unreadable.wav" else corpus_kinds.Case(c.name, "ok") for c in cases]
    list_file = corpus_kinds.write_list_file(root.parent / "list.txt", root, cases)
    return root, list_file, cases


@pytest.fixture(scope="module")
def bad_corpus_runs(bad_corpus, exported_model, tmp_path_factory):
    """The same command twice, into two fresh output directories."""
    root, list_file, _ = bad_corpus
    runs = []
    for name in ("first", "second"):
        out_dir = tmp_path_factory.mktemp(name) / "out"
        done = run_cli(root, "--from-list", list_file, "--out", out_dir, "--model", exported_model, *CLI_BASE,
                       drop_capabilities=os.geteuid() == 0 and SETPRIV is not None)
        runs.append((out_dir, done))
    return runs


def test_corpus_has_at_least_40_kinds():
    assert len(corpus_kinds.KINDS) >= 40
    statuses = [kind[2] for kind in corpus_kinds.KINDS]
    assert statuses.count("failed") >= 25 and statuses.count("ok") >= 20 and statuses.count("skipped") >= 4


def test_bad_corpus_run_never_crashes_and_exits_1(bad_corpus, bad_corpus_runs):
    _, _, cases = bad_corpus
    for out_dir, done in bad_corpus_runs:
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr and "Segmentation" not in stderr
        failed = sum(c.status == "failed" for c in cases)
        ok = sum(c.status == "ok" for c in cases)
        skipped = sum(c.status == "skipped" for c in cases)
        assert f"{len(cases)} total: {ok} ok, {failed} failed, {skipped} skipped (too short)" in done.stdout.decode()


def test_every_input_is_in_the_manifest_with_its_status_and_a_one_line_reason(bad_corpus, bad_corpus_runs):
    root, _, cases = bad_corpus
    out_dir, _ = bad_corpus_runs[0]
    records = manifest_records(out_dir)
    assert sorted(r["input"] for r in records) == sorted(c.name for c in cases)  # one record each
    by_input = {r["input"]: r for r in records}
    wrong = []
    for case in cases:
        record = by_input[case.name]
        message = record.get("error") if case.status == "failed" else record.get("reason")
        if record["status"] != case.status or (case.reason and not re.search(case.reason, message or "")):
            wrong.append((case.name, case.status, record["status"], message))
        if case.status == "failed":
            # One line, naming the file first: "<path>: <reason>".
            # (a write error names the output instead: out/<input>.npz)
            named = (os.fspath(root / case.name) + ": ", os.fspath(out_dir / case.name) + ".npz: ")
            assert "\n" not in message and message.startswith(named), message
            assert record["output"] is None
    assert wrong == []


def test_every_good_input_is_embedded_whole(bad_corpus, bad_corpus_runs):
    root, _, cases = bad_corpus
    out_dir, _ = bad_corpus_runs[0]
    by_input = {r["input"]: r for r in manifest_records(out_dir)}
    for case in cases:
        if case.status != "ok":
            continue
        record = by_input[case.name]
        data = outputs.read_npz(out_dir / record["output"])
        expected = windows.count_examples(len(audio.load_audio(root / case.name)))
        assert record["examples"] == expected == len(data["embedding"]) >= 1, case.name
        assert np.isfinite(data["embedding"]).all() and data["postprocessed"].dtype == np.uint8
        assert data["metadata"]["input"] == case.name
    assert_consistent(out_dir)  # nothing for failed or skipped inputs, no temporaries


def test_same_inputs_twice_give_byte_identical_outputs(bad_corpus, bad_corpus_runs):
    """Every output file and run_config.json byte for byte. The manifest too, but for the one
    thing that must differ: an error writing an output names that output, so it holds its output
    directory (here the over-long name's "cannot write (File name too long)")."""
    (first, _), (second, _) = bad_corpus_runs
    one, two = files_under(first), files_under(second)
    assert sorted(one) == sorted(two)
    assert [name for name in one if one[name] != two[name] and name != outputs.MANIFEST_NAME] == []
    assert len(one) == sum(case.status == "ok" for case in bad_corpus[2]) + 2  # + manifest, run_config
    manifests = [m.replace(os.fsencode(out), b"<out>") for m, out in ((one[outputs.MANIFEST_NAME], first),
                                                                       (two[outputs.MANIFEST_NAME], second))]
    assert manifests[0] == manifests[1]
    assert one[outputs.MANIFEST_NAME] != two[outputs.MANIFEST_NAME]  # the output directory shows only there
    assert manifests[0].count(b"<out>") == 1


def test_rerun_over_the_bad_corpus_redoes_only_the_failures(bad_corpus, bad_corpus_runs, exported_model, tmp_path):
    root, list_file, cases = bad_corpus
    out_dir = tmp_path / "out"
    shutil.copytree(bad_corpus_runs[0][0], out_dir)
    done = run_cli(root, "--from-list", list_file, "--out", out_dir, "--model", exported_model, *CLI_BASE,
                   drop_capabilities=os.geteuid() == 0 and SETPRIV is not None)
    assert done.returncode == 1
    failed = sum(c.status == "failed" for c in cases)
    assert f"0 ok, {failed} failed, 0 skipped (too short), {len(cases) - failed} already done" in done.stdout.decode()
    assert files_under(out_dir).keys() == files_under(bad_corpus_runs[0][0]).keys()


@pytest.mark.slow
def test_three_hours_of_silence(tmp_path, exported_model):
    """11 250 examples from one 3-h FLAC; memory is read from the process's own VmHWM."""
    path = tmp_path / "in" / "silence_3h.flac"
    path.parent.mkdir()
    corpus_kinds._silence_flac(3 * 3600.0)(path)
    process = subprocess.Popen(
        cli_command(path, "--out", tmp_path / "out", "--model", exported_model, *CLI_BASE),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    peak_kib = 0
    while process.poll() is None:
        peak_kib = max(peak_kib, _status_kib(process.pid, "VmHWM"))
        time.sleep(0.5)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    (record,) = manifest_records(tmp_path / "out")
    assert record["examples"] == windows.count_examples(3 * 3600 * 16000) == 11249
    assert record["duration_seconds"] == 10800.0
    print(f"\n3 h silence: {record['examples']} examples, peak RSS {peak_kib / 1024:.0f} MiB; {stdout.decode()}")
    assert peak_kib < 2 * 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


# --- 2. kill -9 and resume ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory, exported_model):
    """200 files of 1-2 s, and the outputs of one uninterrupted run over them."""
    root = tmp_path_factory.mktemp("short") / "corpus"
    names = corpus_kinds.write_short_corpus(root, 200, seed=5)
    reference = tmp_path_factory.mktemp("reference") / "out"
    done = run_cli(root, "--out", reference, "--model", exported_model, *CLI_BASE)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return root, names, reference


def _manifest_lines(out_dir: Path) -> int:
    try:
        return (out_dir / outputs.MANIFEST_NAME).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_and_resume(root: Path, reference: Path, out_dir: Path, exported_model, *, kills: int, seed: int) -> dict:
    """Start the command, SIGKILL it at a seeded random moment, check what is left, repeat ``kills``
    times, then let it finish. Moments: once the manifest reaches a random line count (sorted,
    spread over the run), plus a random 0-250 ms, so kills land in decoding, in the device
    step, inside an atomic write and between a rename and its manifest line."""
    rng = random.Random(seed)
    total = len(files_under(reference)) - 2
    targets = sorted(rng.sample(range(0, total - 10), kills))
    seen_inodes: dict[str, int] = {}
    history = []
    for target in targets:
        process = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *CLI_BASE),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
        deadline = time.monotonic() + 300
        while _manifest_lines(out_dir) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        assert killed, f"finished before the kill at line {target}: {stderr.decode()[-2000:]}"
        assert process.returncode == -signal.SIGKILL
        history.append(_manifest_lines(out_dir))
        # What a kill leaves: every ok record's output is whole; outputs are whole or absent
        # (an output renamed just before the kill may still lack its record; temporaries may remain).
        records = manifest_records(out_dir) if (out_dir / outputs.MANIFEST_NAME).exists() else []
        for record in records:
            assert record["status"] == "ok"
            assert (out_dir / record["output"]).read_bytes() == (reference / record["output"]).read_bytes()
        for name, data in files_under(out_dir).items():
            if name.endswith(".npz") and not TEMPORARY.match(Path(name).name):
                assert data == (reference / name).read_bytes(), f"{name}: partial or different output"
                seen_inodes.setdefault(name, (out_dir / name).stat().st_ino)
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *CLI_BASE)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    redone = [name for name, inode in seen_inodes.items() if (out_dir / name).stat().st_ino != inode]
    return {"lines_at_each_kill": history, "redone": redone, "targets": targets}


def check_resumed_equals_reference(out_dir: Path, reference: Path, names: list[str], kills: int, report: dict):
    final, expected = files_under(out_dir), files_under(reference)
    assert sorted(final) == sorted(expected)  # no temporaries, no orphans, nothing missing
    assert [name for name in final if final[name] != expected[name]] == []  # every byte, the manifest too
    records = manifest_records(out_dir)
    ok_per_input = {name: 0 for name in names}
    for record in records:
        ok_per_input[record["input"]] += record["status"] == "ok"
    assert set(ok_per_input.values()) == {1}  # each input recorded ok exactly once across all runs
    # Work redone: only an output renamed into place whose record the kill prevented (at most one a kill).
    assert len(report["redone"]) <= kills, report
    assert_consistent(out_dir)


def test_kill_9_three_times_then_resume(short_corpus, exported_model, tmp_path):
    root, names, reference = short_corpus
    out_dir = tmp_path / "out"
    report = kill_and_resume(root, reference, out_dir, exported_model, kills=3, seed=3)
    check_resumed_equals_reference(out_dir, reference, names, 3, report)
    assert report["lines_at_each_kill"] == sorted(report["lines_at_each_kill"])


@pytest.mark.slow
def test_kill_9_ten_times_then_resume(short_corpus, exported_model, tmp_path):
    root, names, reference = short_corpus
    out_dir = tmp_path / "out"
    report = kill_and_resume(root, reference, out_dir, exported_model, kills=10, seed=10)
    check_resumed_equals_reference(out_dir, reference, names, 10, report)
    print(f"\n10 kills: manifest lines at each kill {report['lines_at_each_kill']}, "
          f"outputs rewritten on resume {len(report['redone'])}")


# --- Issue 8: one run at a time per --out; resume byte-identical where rows straddle batches --------
LOCK_CLI = ["--device", "cpu", "--batch-size", "8", "--workers", "1", "--quiet"]


def _wait_for(condition, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_two_runs_into_one_out_dir_the_second_stops_at_once_naming_the_first(short_corpus, exported_model, tmp_path):
    """Run A is frozen (SIGSTOP) while it holds the lock; run B into the same --out exits 2 at once
    naming A's pid and host, and writes nothing. A then finishes alone: one record per input (it
    was 78 records for 40 inputs). Then A is run again and killed with kill -9: its lock file
    stays, and blocks no one."""
    import socket

    root, names, reference = short_corpus
    out_dir = tmp_path / "out"
    first = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        _wait_for(lambda: _manifest_lines(out_dir) >= 1 or first.poll() is not None)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first run finished before the second started"
        lines = _manifest_lines(out_dir)
        started = time.monotonic()
        second = run_cli(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI, timeout=120)
        seconds = time.monotonic() - started
        stderr = second.stderr.decode()
        assert second.returncode == 2, stderr
        assert re.search(rf"^error: {re.escape(str(out_dir))}: another vggish-tf2 run is writing here "
                         rf"\(pid {first.pid} on host {re.escape(socket.gethostname())}, started ", stderr, re.M), stderr
        assert "Traceback" not in stderr and second.stdout == b""
        assert _manifest_lines(out_dir) == lines  # the second run wrote nothing
        print(f"\nsecond run refused in {seconds:.1f} s (no model loaded)")
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr.decode()[-2000:]
    records = manifest_records(out_dir)
    assert sorted(r["input"] for r in records) == sorted(names)  # each input once
    assert not (out_dir / outputs.LOCK_NAME).exists()

    # kill -9 while holding the lock: the file stays, the lock does not.
    shutil.rmtree(out_dir)
    killed = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())
    _wait_for(lambda: _manifest_lines(out_dir) >= 1 or killed.poll() is not None)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and (out_dir / outputs.LOCK_NAME).exists()
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not (out_dir / outputs.LOCK_NAME).exists()


def _differences(out_dir: Path, reference: Path) -> list[str]:
    """Every file that is not byte-identical to the reference's, with the largest embedding
    difference and the rows that differ when both are npz."""
    final, expected = files_under(out_dir), files_under(reference)
    report = [f"{name}: only in one of the two" for name in sorted(set(final) ^ set(expected))]
    for name in sorted(set(final) & set(expected)):
        if final[name] == expected[name]:
            continue
        if name.endswith(".npz"):
            a = outputs.read_npz(out_dir / name)["embedding"]
            b = outputs.read_npz(reference / name)["embedding"]
            if a.shape == b.shape:
                rows = np.flatnonzero((a != b).any(axis=1))
                report.append(f"{name}: rows {rows.tolist()} of {len(a)} differ, max |diff| {np.abs(a - b).max():.3g}")
                continue
        report.append(f"{name}: bytes differ")
    return report


@pytest.fixture(scope="module")
def straddling_corpus(tmp_path_factory, exported_model):
    """40 stereo files of 2-12 s, and one uninterrupted run over them with batch 8."""
    root = tmp_path_factory.mktemp("straddling") / "corpus"
    root.mkdir()
    names = corpus_kinds.write_straddling_corpus(root, 40, seed=8)
    reference = tmp_path_factory.mktemp("straddling_reference") / "out"
    done = run_cli(root, "--out", reference, "--model", exported_model, *LOCK_CLI)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return root, names, reference


def test_kill_9_then_resume_is_byte_identical_where_rows_straddle_batches(straddling_corpus, exported_model, tmp_path):
    """Issue 8: after a resume, a file's rows sit in other rows of other batches than in the
    uninterrupted run; its embeddings must not change by a single bit (they did by ~1 ulp)."""
    root, names, reference = straddling_corpus
    out_dir = tmp_path / "out"
    rng = random.Random(8)
    for target in sorted(rng.sample(range(2, len(names) - 5), 3)):
        process = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
        _wait_for(lambda: _manifest_lines(out_dir) >= target or process.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.2))
        assert process.poll() is None, "finished before the kill"
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _differences(out_dir, reference) == []
    assert_consistent(out_dir)


def test_batch_8_and_batch_64_give_byte_identical_outputs(straddling_corpus, exported_model, tmp_path):
    root, _, reference = straddling_corpus
    out_dir = tmp_path / "out"
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *LOCK_CLI[:2], "--batch-size", "64",
                   *LOCK_CLI[4:])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _differences(out_dir, reference) == []


# --- Full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs; skipped where mounting is not permitted (ENOSPC on a write is then covered by
    tests/test_outputs.py with /dev/full and tests/corpus/test_run.py with an injected OSError 28)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_gives_a_clear_error_leaves_nothing_corrupt_and_resumes(small_tmpfs, exported_model, tmp_path):
    root = tmp_path / "corpus"
    names = corpus_kinds.write_short_corpus(root, 24, seed=7, min_seconds=3.0, max_seconds=4.0)
    reference = tmp_path / "reference"
    assert run_cli(root, "--out", reference, "--model", exported_model, *CLI_BASE).returncode == 0
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    filler.write_bytes(b"\0" * (free - 64 * 1024))  # leave 64 KiB: room for a few outputs only
    out_dir = small_tmpfs / "out"

    done = run_cli(root, "--out", out_dir, "--model", exported_model, *CLI_BASE)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr
    records = manifest_records(out_dir)
    failures = [r["error"] for r in records if r["status"] == "failed"]
    # Either the manifest still took the failures, or the run stopped on the manifest itself.
    assert "No space left on device" in " ".join(failures) + stderr
    assert failures or "cannot append to the manifest (No space left on device)" in stderr
    ok = [r for r in records if r["status"] == "ok"]
    assert 0 < len(ok) < len(names)
    for name, data in files_under(out_dir).items():  # whatever is there is whole and right
        assert not TEMPORARY.match(Path(name).name)
        if name.endswith(".npz"):
            assert data == (reference / name).read_bytes()
    assert {r["output"] for r in ok} == {n for n in files_under(out_dir) if n.endswith(".npz")}

    filler.unlink()
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *CLI_BASE)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert f"{len(names) - len(ok)} ok, 0 failed, 0 skipped (too short), {len(ok)} already done" in done.stdout.decode()
    final, expected = files_under(out_dir), files_under(reference)
    assert sorted(n for n in final if n.endswith(".npz")) == sorted(n for n in expected if n.endswith(".npz"))
    assert all(final[n] == expected[n] for n in final if n.endswith(".npz"))
    assert {r["input"]: r["status"] for r in manifest_records(out_dir)} == {n: "ok" for n in names}  # last wins


# --- 3. Load: 10 000 files ------------------------------------------------------------------------
LOAD_FILES = int(os.environ.get("VGGISH_LOAD_FILES", "10000"))


@pytest.mark.slow
def test_ten_thousand_files_flat_memory_constant_per_file_cost(tmp_path, exported_model):
    """RSS (VmRSS, sampled every 0.5 s with the manifest's line count) must not grow by 10 % from
    the end of warm-up (the first 10 % of the files) to the end; files per second in the last
    tenth must be within 2x of the second tenth (a per-file cost that grows would show here)."""
    root = tmp_path / "corpus"
    corpus_kinds.write_short_corpus(root, LOAD_FILES, seed=11, min_seconds=0.98, max_seconds=1.2)  # 1 example each
    out_dir = tmp_path / "out"
    started = time.monotonic()
    process = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *CLI_BASE),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    samples = []  # (seconds, files done, RSS KiB)
    while process.poll() is None:
        samples.append((time.monotonic() - started, _manifest_lines(out_dir), _status_kib(process.pid, "VmRSS")))
        time.sleep(0.5)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert _manifest_lines(out_dir) == LOAD_FILES
    samples = [s for s in samples if s[2] > 0]
    tenth = LOAD_FILES // 10
    after_warmup = [rss for _, done, rss in samples if done >= tenth]
    growth = max(after_warmup) / after_warmup[0] - 1
    rates = []
    for decile in range(10):
        window = [(t, done) for t, done, _ in samples if decile * tenth <= done <= (decile + 1) * tenth]
        rates.append((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
    print(f"\nload: {LOAD_FILES} files in {samples[-1][0]:.0f} s; RSS after warm-up {after_warmup[0] / 1024:.0f} MiB, "
          f"max {max(after_warmup) / 1024:.0f} MiB (growth {100 * growth:.1f} %); "
          f"files/s per tenth {[round(r, 1) for r in rates]}\n{stdout.decode()}")
    assert growth < 0.10
    assert rates[-1] > rates[1] / 2


# --- 5. Misuse gets a clear error -----------------------------------------------------------------
@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=16, workers=1)


def test_model_directory_missing_or_not_an_export_says_how_to_convert(tmp_path, synthetic_files):
    from vggish_tf2.embedder import Embedder

    with pytest.raises(ModelNotFoundError, match=r"(?i)nowhere: no model here[.;] convert .*checkpoint_to_savedmodel"):
        # (either wording: the Embedder checks the path before importing TensorFlow, in its own words)
        Embedder(tmp_path / "nowhere", device="cpu")
    # The TF1 checkpoint itself, given where the converted model belongs.
    with pytest.raises(ModelError, match=r"vggish_model.ckpt: not a SavedModel \(no saved_model.pb\); convert"):
        Embedder(synthetic_files[0], device="cpu")
    with pytest.raises(InvalidArgumentError, match=r"model=123 must be a model directory path or a TF Hub handle"):
        Embedder(123, device="cpu")


def test_incompatible_export_through_the_cli(exported_model, tmp_path, capsys):
    from vggish_tf2 import cli, model

    copy = tmp_path / "old_export"
    shutil.copytree(exported_model, copy)
    meta_path = copy / "assets" / model.METADATA_ASSET
    metadata = json.loads(meta_path.read_text())
    metadata["format_version"] = 0
    meta_path.write_text(json.dumps(metadata))
    corpus_kinds._audio(seed=1)(tmp_path / "a.wav")
    code = cli.main(["embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), "--model", str(copy),
                     "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(r"^error: .*old_export: export format version 0 is not supported .* re-convert it", err, re.M)


@pytest.mark.parametrize("waveform, sample_rate, error, match", [
    (["a", "b", "c"], 16000, InvalidAudioError, r"waveform dtype <U1 must be floating point"),
    (None, 16000, InvalidAudioError, r"waveform.shape=\(\) must be \[samples\] or \[samples, channels\]"),
    (np.zeros(16000, np.float32), "16000", InvalidArgumentError, r"sample_rate='16000' must be a number"),
    (np.zeros(16000, np.float32), 0, InvalidArgumentError, r"sample_rate=0 must be > 0"),
    (np.zeros(16000, np.float32), -8000, InvalidArgumentError, r"sample_rate=-8000 must be > 0"),
    (np.zeros(16000, np.float32), float("nan"), InvalidArgumentError, r"sample_rate=nan must be > 0"),
    (np.zeros(16000, np.float32), True, InvalidArgumentError, r"sample_rate=True must be a number"),
    (np.zeros(16000, np.float32), None, InvalidArgumentError, r"sample_rate=None must be a number"),
])
def test_embed_wrong_argument_types(embedder, waveform, sample_rate, error, match):
    with pytest.raises(error, match=match):
        embedder.embed(waveform, sample_rate=sample_rate)


def test_embed_sample_rate_is_keyword_only_and_required(embedder):
    with pytest.raises(TypeError, match="sample_rate"):
        embedder.embed(np.zeros(16000, np.float32))
    with pytest.raises(TypeError, match="positional argument"):
        embedder.embed(np.zeros(16000, np.float32), 16000)


def test_embed_corpus_misuse(tmp_path, embedder):
    from vggish_tf2.pipeline import embed_corpus

    corpus_kinds._audio(seed=2)(tmp_path / "a.wav")
    # A single path where a list belongs would otherwise be iterated character by character.
    with pytest.raises(InvalidArgumentError, match=r"inputs=.*a\.wav' must be a list of paths.*\[.*a\.wav'\]"):
        embed_corpus(str(tmp_path / "a.wav"), out_dir=tmp_path / "out", embedder=embedder)
    with pytest.raises(InvalidArgumentError, match=r"inputs=.*a\.wav'\) must be a list of paths"):
        embed_corpus(tmp_path / "a.wav", out_dir=tmp_path / "out", embedder=embedder)
    with pytest.raises(InvalidArgumentError, match=r"postprocess='yes' must be True or False"):
        embed_corpus([tmp_path / "a.wav"], out_dir=tmp_path / "out", embedder=embedder, postprocess="yes")
    assert not (tmp_path / "out").exists()
