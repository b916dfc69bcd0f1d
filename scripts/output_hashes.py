"""Hash what `vggish-tf2 embed` writes, so that a restructure can show its arrays are byte-identical.

    python scripts/output_hashes.py --model models/vggish --work /tmp/hashes-before > before.json
    # ... change the code ...
    python scripts/output_hashes.py --model models/vggish --work /tmp/hashes-after > after.json
    python scripts/output_hashes.py --compare before.json after.json

It generates a mixed corpus (sine, noise, silence and a chirp at 16-48 kHz, mono and stereo, WAV and
FLAC, a clip shorter than one example, an undecodable file, nested folders) and embeds it with the
command line in every layout and format: per-file npz, Parquet and TFRecord; the sharded Parquet and
TFRecord datasets; pooled means; a run resumed after half the corpus; a run with other settings that
must be refused. Every array (npz members, Parquet columns of numbers, TFRecord feature lists) is
hashed apart from the metadata (JSON, strings), which is kept as text: ``--compare`` says which
arrays differ (a failure) and which metadata changed (shown, for the reader to judge).
Fixed batch size and compile mode: no tuning probe, the same numbers on every run of one machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["make_corpus", "hash_outputs", "main"]

RUNS = {
    # name: extra flags of `vggish-tf2 embed` (each into its own --out)
    "npz": ["--format", "npz"],
    "parquet": ["--format", "parquet"],
    "tfrecord": ["--format", "tfrecord"],
    "shards_parquet": ["--format", "parquet", "--layout", "shards", "--shard-rows", "40"],
    "shards_tfrecord": ["--format", "tfrecord", "--layout", "shards", "--shard-rows", "40"],
    "pooled_npz": ["--format", "npz", "--pool", "mean"],
    "pooled_parquet_shards": ["--format", "parquet", "--layout", "shards", "--pool", "mean"],
    "pad_soxr": ["--format", "npz", "--short-clips", "pad", "--resampler", "soxr_hq", "--hop-seconds", "0.5"],
}
FIXED = ["--batch-size", "24", "--no-jit-compile"]


def make_corpus(root: Path) -> None:
    """The mixed corpus, deterministic."""
    import soundfile as sf

    rng = np.random.default_rng(20261203)
    root.mkdir(parents=True, exist_ok=True)
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)

    def tone(rate: int, seconds: float, hz: float) -> np.ndarray:
        t = np.arange(int(rate * seconds)) / rate
        return 0.5 * np.sin(2 * np.pi * hz * t)

    sf.write(root / "sine_44k_stereo.wav", np.stack([tone(44100, 3.2, 440), tone(44100, 3.2, 1000)], 1),
             44100, subtype="PCM_16")
    sf.write(root / "a" / "noise_16k.wav", 0.3 * rng.standard_normal(16000 * 5), 16000, subtype="PCM_16")
    sf.write(root / "a" / "silence_22k.wav", np.zeros(22050 * 2), 22050, subtype="PCM_16")
    t = np.arange(48000 * 4) / 48000
    chirp = 0.4 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
    sf.write(root / "a" / "b" / "chirp_48k.flac", chirp, 48000, subtype="PCM_24")
    sf.write(root / "a" / "b" / "short_8k.wav", tone(8000, 0.5, 300), 8000, subtype="PCM_16")
    sf.write(root / "long_32k_3ch.wav", 0.2 * rng.standard_normal((32000 * 11, 3)), 32000, subtype="FLOAT")
    (root / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")


def embed(corpus: Path, out: Path, model: Path, flags: list[str], inputs: list[Path] | None = None) -> dict:
    command = [sys.executable, "-m", "vggish_tf2", "embed", *map(str, inputs or [corpus]), "--out", str(out),
               "--model", str(model), *FIXED, *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    last_line = done.stderr.strip().splitlines()[-1:] if done.stderr else []
    # The scratch folder's own path is no part of the result: two runs in two folders compare equal.
    return {"exit": done.returncode, "stderr_tail": [line.replace(str(out.parent), "<work>") for line in last_line]}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def hash_npz(path: Path) -> tuple[dict, dict]:
    arrays, meta = {}, {}
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            value = npz[name]
            if value.dtype.kind in "biuf":
                arrays[name] = f"{value.dtype}{list(value.shape)}:{digest(np.ascontiguousarray(value).tobytes())}"
            else:
                meta[name] = str(value[()]) if value.ndim == 0 else value.tolist()
    return arrays, meta


def hash_parquet(path: Path) -> tuple[dict, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    arrays, meta = {}, {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        flat = values[0] if values else None
        while isinstance(flat, list) and flat:
            flat = flat[0]
        if isinstance(flat, (int, float, bytes)) and not isinstance(flat, bool):
            arrays[name] = digest(repr(values).encode())
        else:
            meta[name] = values
    schema_meta = table.schema.metadata or {}
    meta["schema_metadata"] = {k.decode(): v.decode() for k, v in schema_meta.items()}
    return arrays, meta


def hash_tfrecord(path: Path) -> tuple[dict, dict]:
    import tensorflow as tf

    arrays, meta = {}, {}
    for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
        example = tf.train.SequenceExample.FromString(record)
        arrays[f"record{index}.feature_lists"] = digest(example.feature_lists.SerializeToString(deterministic=True))
        meta[f"record{index}.context"] = str(example.context)
    return arrays, meta


READERS = {".npz": hash_npz, ".parquet": hash_parquet, ".tfrecord": hash_tfrecord}


PART_RUN = re.compile(r"part-\d{8}T\d{6}Z-[0-9a-f]+-")


def hash_outputs(out: Path) -> dict:
    """{relative path: {"arrays": ..., "meta": ...}} of every output file; other files as text or size.
    Shard names carry the time and a random tag of the run that wrote them: they become run0, run1..."""
    result = {}
    paths = sorted(p for p in out.rglob("*") if p.is_file())
    runs = sorted({m.group(0) for p in paths for m in [PART_RUN.search(p.name)] if m})
    for path in paths:
        name = path.relative_to(out).as_posix()
        for number, run in enumerate(runs):
            name = name.replace(run, f"part-run{number}-")
        reader = READERS.get(path.suffix)
        if reader is not None:
            arrays, meta = reader(path)
            result[name] = {"arrays": arrays, "meta": meta}
        elif path.suffix in (".json", ".jsonl"):
            result[name] = {"arrays": {}, "meta": {"text": path.read_text()}}
        else:
            result[name] = {"arrays": {}, "meta": {"bytes": path.stat().st_size}}
    return result


def run_all(model: Path, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    corpus = work / "corpus"
    make_corpus(corpus)
    report = {}
    for name, flags in RUNS.items():
        status = embed(corpus, work / name, model, flags)
        report[name] = {"status": status, "outputs": hash_outputs(work / name)}
    # resumed: half the corpus first, then all of it into the same folder
    half = [corpus / "a"]
    first = embed(corpus, work / "resumed", model, ["--format", "parquet", "--layout", "shards"], inputs=half)
    second = embed(corpus, work / "resumed", model, ["--format", "parquet", "--layout", "shards"])
    report["resumed"] = {"status": [first, second], "outputs": hash_outputs(work / "resumed")}
    # refused: other settings into a folder made with different ones
    refused = embed(corpus, work / "npz", model, ["--format", "npz", "--hop-seconds", "0.5"])
    report["refused"] = {"status": refused, "outputs": hash_outputs(work / "npz")}
    return report


def compare(before: dict, after: dict) -> int:
    failures = 0
    for run in sorted(set(before) | set(after)):
        b, a = before.get(run, {}), after.get(run, {})
        if b.get("status", {}) != a.get("status", {}):
            print(f"{run}: status {b.get('status')} -> {a.get('status')}")
        b_out, a_out = b.get("outputs", {}), a.get("outputs", {})
        for name in sorted(set(b_out) | set(a_out)):
            if name not in a_out or name not in b_out:
                print(f"{run}/{name}: {'removed' if name not in a_out else 'added'}")
                continue
            if b_out[name]["arrays"] != a_out[name]["arrays"]:
                failures += 1
                print(f"ARRAYS DIFFER {run}/{name}: {b_out[name]['arrays']} -> {a_out[name]['arrays']}")
            if b_out[name]["meta"] != a_out[name]["meta"]:
                print(f"meta changed {run}/{name}")
    print(f"{failures} output files with differing arrays")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the export to embed with")
    parser.add_argument("--work", type=Path, help="a scratch folder (emptied)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*(json.loads(p.read_text()) for p in args.compare))
    if not (args.model and args.work):
        parser.error("--model and --work are needed (or --compare)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    json.dump(run_all(args.model.resolve(), args.work.resolve()), sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
