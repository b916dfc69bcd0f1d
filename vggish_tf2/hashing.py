"""sha256 of files, and an export's recorded file hashes: written, read, checked, fingerprinted.

No TensorFlow here, so the downloader, the pipeline and ``vggish-tf2 info`` (metadata only, or
``--verify``) use it without importing TF. An export records the sha256 of each of its files in
``vggish_tf2_files.sha256.json`` (beside saved_model.pb): a JSON object, relative POSIX path ->
64 hex digits, every file of the export but itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

from vggish_tf2.errors import ModelError, ModelNotFoundError, one_line

CHUNK_BYTES = 1 << 20
FILE_HASHES = "vggish_tf2_files.sha256.json"  # beside saved_model.pb; lists every other file's sha256
METADATA_ASSET = "vggish_tf2.json"  # the export's metadata, under assets/
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HOW_TO = "convert Google's checkpoint with: python -m convert.checkpoint_to_savedmodel --download"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def export_files(export_dir: Path) -> list[Path]:
    """Every file of an export except its hash list, sorted."""
    return sorted(p for p in Path(export_dir).rglob("*") if p.is_file() and p.name != FILE_HASHES)


def hash_export_files(export_dir: Path) -> dict[str, str]:
    """sha256 of every file of the export now (relative POSIX path -> hex)."""
    export_dir = Path(export_dir)
    return {p.relative_to(export_dir).as_posix(): sha256_file(p) for p in export_files(export_dir)}


def write_file_hashes(export_dir: Path) -> None:
    """Record the sha256 of every file of the export in its hash list."""
    export_dir = Path(export_dir)
    (export_dir / FILE_HASHES).write_text(json.dumps(hash_export_files(export_dir), indent=2, sort_keys=True) + "\n")


def read_file_hashes(export_dir: Path) -> dict[str, str]:
    """The export's recorded hashes. ModelError naming the hash file when it is missing, not JSON,
    or not an object of relative paths inside the export -> 64 lowercase hex digits."""
    path = Path(export_dir) / FILE_HASHES
    fix = "re-convert the export (python -m convert.checkpoint_to_savedmodel)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ModelError(f"{path}: no recorded file hashes, so the export's files cannot be checked; {fix}, "
                         "or skip the check if you trust this directory (--no-verify-model, "
                         "verify_hashes=False / verify_model_hashes=False)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read the recorded file hashes ({one_line(e)}); {fix}") from e
    try:
        recorded = json.loads(text)
    except ValueError as e:
        raise ModelError(f"{path}: corrupt file-hash list, not JSON ({one_line(e)}); {fix}") from e
    if not isinstance(recorded, dict) or not recorded:
        got = "an empty object" if isinstance(recorded, dict) else f"a JSON {type(recorded).__name__}"
        raise ModelError(f"{path}: corrupt file-hash list: expected a JSON object of file name -> sha256, "
                         f"got {got}; {fix}")
    for name, digest in recorded.items():
        parts = PurePosixPath(name).parts
        if not name or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or "\0" in name:
            raise ModelError(f"{path}: corrupt file-hash list: {name!r} is not a path inside the export; {fix}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ModelError(f"{path}: corrupt file-hash list: {name}: {digest!r} is not a sha256 "
                             f"(64 lowercase hex digits); {fix}")
    return recorded


def verify_file_hashes(export_dir: Path) -> dict[str, str]:
    """Raise ModelError when a file of the export differs from the hashes recorded at conversion
    (or the hash list is missing or corrupt); returns the recorded hashes."""
    export_dir = Path(export_dir)
    recorded = read_file_hashes(export_dir)
    present = {p.relative_to(export_dir).as_posix() for p in export_files(export_dir)}
    if set(recorded) != present:
        raise ModelError(f"{export_dir}: files differ from those recorded at conversion "
                         f"(missing: {sorted(set(recorded) - present)}, extra: {sorted(present - set(recorded))})")
    for name, expected in recorded.items():
        if sha256_file(export_dir / name) != expected:
            raise ModelError(f"{export_dir / name}: sha256 differs from the one recorded at conversion (file modified or corrupt)")
    return recorded


VERIFIED_CACHE_VERSION = 1
VERIFIED_CACHE_ENTRIES = 16  # export directories remembered


def _file_identity(path: Path) -> list[int]:
    """What changes when a file's bytes can have changed: size, mtime, ctime (which no user can set
    back), inode and device. A rewrite, a replacement by rename, a touch-back of the mtime all move
    at least one of them."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def verify_file_hashes_cached(export_dir: Path, cache_file: Path | None) -> dict[str, str]:
    """:func:`verify_file_hashes`, skipping the re-hash (~0.2-3 s for VGGish's 290 MB, warm or cold
    disk) when every file's identity (size, mtime, ctime, inode, device) and the hash list's own
    sha256 are those recorded in ``cache_file`` after the last full verification of this
    directory. Any difference, or no usable cache, re-hashes everything and records the result.
    ``cache_file`` None always re-hashes. The cache is a convenience of this user's own account:
    ``vggish-tf2 info --verify`` and ``verify_file_hashes`` always re-hash."""
    export_dir = Path(export_dir)
    if cache_file is None:
        return verify_file_hashes(export_dir)
    recorded = read_file_hashes(export_dir)
    try:
        key = os.fspath(export_dir.resolve())
        names = [p.relative_to(export_dir).as_posix() for p in export_files(export_dir)]
        state = {"hash_list_sha256": sha256_file(export_dir / FILE_HASHES),
                 "files": {name: _file_identity(export_dir / name) for name in names}}
    except OSError:
        return verify_file_hashes(export_dir)
    try:
        cached = json.loads(Path(cache_file).read_text(encoding="utf-8"))
        if (isinstance(cached, dict) and cached.get("version") == VERIFIED_CACHE_VERSION
                and cached.get("exports", {}).get(key) == state and set(state["files"]) == set(recorded)):
            return recorded
    except (OSError, ValueError, AttributeError):
        cached = None
    recorded = verify_file_hashes(export_dir)  # raises on any difference: nothing is recorded then
    exports = cached.get("exports", {}) if isinstance(cached, dict) and cached.get("version") == VERIFIED_CACHE_VERSION else {}
    exports = {k: v for k, v in exports.items() if isinstance(v, dict)}
    exports.pop(key, None)
    exports[key] = state  # last: the oldest entries go first below
    exports = dict(list(exports.items())[-VERIFIED_CACHE_ENTRIES:])
    try:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        temp = Path(cache_file).with_name(f".{Path(cache_file).name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"version": VERIFIED_CACHE_VERSION, "exports": exports}), encoding="utf-8")
        os.replace(temp, cache_file)
    except OSError:
        pass  # a read-only cache only costs the re-hash next time
    return recorded


def fingerprint_hashes(hashes: dict[str, str]) -> str:
    """``sha256-files:<hex>``: the sha256 of the canonical JSON of a file-hash list."""
    canonical = json.dumps(hashes, sort_keys=True, separators=(",", ":")).encode()
    return "sha256-files:" + hashlib.sha256(canonical).hexdigest()


def export_fingerprint(export_dir: Path, *, trust_recorded: bool = True) -> str:
    """``sha256-files:<hex>`` naming every file of the export: the hash of its recorded hash list
    (checked at load) or, when ``trust_recorded`` is False or there is no list, of the files'
    hashes now. Both give the same value for an intact export."""
    export_dir = Path(export_dir)
    if trust_recorded and (export_dir / FILE_HASHES).exists():
        return fingerprint_hashes(read_file_hashes(export_dir))
    try:
        return fingerprint_hashes(hash_export_files(export_dir))
    except OSError as e:
        raise ModelError(f"{export_dir}: cannot hash the export's files ({one_line(e)})") from e


def read_export_metadata(export_dir: str | os.PathLike) -> dict:
    """The export's metadata asset as stored (not checked for compatibility: see
    ``vggish_tf2.model.read_metadata``). ModelError when the directory is not an export."""
    export_dir = Path(export_dir)
    if not export_dir.exists():
        raise ModelNotFoundError(f"{export_dir}: no model here; {_HOW_TO}")
    if not (export_dir / "saved_model.pb").is_file():
        raise ModelError(f"{export_dir}: not a SavedModel (no saved_model.pb); {_HOW_TO}")
    meta_path = export_dir / "assets" / METADATA_ASSET
    if not meta_path.is_file():
        raise ModelError(f"{export_dir}: a SavedModel but not a vggish-tf2 export (no assets/{METADATA_ASSET}); {_HOW_TO}")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{meta_path}: unreadable export metadata ({one_line(e)})") from e
    if not isinstance(metadata, dict):
        raise ModelError(f"{meta_path}: unreadable export metadata (a JSON {type(metadata).__name__}, not an object)")
    return metadata
