"""Fetch Google's released VGGish files into a cache: https only, hash-checked, atomic, resumable.

The known sources (names, URLs, sha256 when known, sizes) are in ``models/manifest.json``.
A transfer goes to ``<name>.part`` in the cache and is renamed into place only once it is complete
and its sha256 matches; an interrupted transfer leaves the ``.part`` file, and the next call asks
the server for the rest only (HTTP Range). A file whose hash does not match is deleted.

When neither the caller nor the manifest knows a file's sha256, the first download records the
hash it saw next to the file (``<name>.sha256``) and every later use is checked against that
record (trust on first use). pooch, which the cache location comes from, does not resume
partial transfers, hence the small downloader here.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

from vggish_tf2.errors import DownloadError
from vggish_tf2.hashing import sha256_file

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.json"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_CHUNK_BYTES = 1 << 20
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class Source:
    """One released file: its name in the cache, the URLs it is published at, and what we know of it."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size_bytes: int | None = None


def load_manifest(path: str | os.PathLike | None = None) -> list[Source]:
    """The sources listed in ``models/manifest.json`` (or ``path``)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        sources = [
            Source(
                name=entry["name"],
                urls=tuple(entry["urls"]),
                sha256=_normalize_sha256(entry.get("sha256"), where=f"{path}: {entry['name']}"),
                size_bytes=entry.get("size_bytes"),
            )
            for entry in document["sources"]
        ]
    except FileNotFoundError as e:
        raise DownloadError(f"{path}: manifest of known sources not found") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DownloadError(f"{path}: not a valid sources manifest ({e})") from e
    for source in sources:
        if not source.name or Path(source.name).name != source.name:
            raise DownloadError(f"{path}: source name {source.name!r} must be a plain file name")
        if not source.urls:
            raise DownloadError(f"{path}: source {source.name!r} lists no URLs")
    return sources


def default_cache_dir() -> Path:
    """The per-user cache (pooch.os_cache('vggish-tf2'), e.g. ~/.cache/vggish-tf2 on Linux)."""
    import pooch

    return Path(pooch.os_cache("vggish-tf2"))


def download_released_files(
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    expected_sha256: Mapping[str, str] | None = None,
    allow_insecure_localhost: bool = False,
    manifest_path: str | os.PathLike | None = None,
    timeout_seconds: float = 60.0,
) -> dict[str, Path]:
    """Make sure every source in the manifest is in ``cache_dir``, downloading what is missing.

    Returns {file name: path in the cache}. ``base_url`` replaces the manifest's URLs with
    ``base_url/<name>`` (a mirror). ``expected_sha256`` ({name: hex}) overrides the manifest's
    hashes. Plain http is refused unless ``allow_insecure_localhost`` and the host is loopback
    (tests). Raises DownloadError naming the URL or file and the problem.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    overrides = {name: _normalize_sha256(value, where=f"expected_sha256[{name!r}]") for name, value in (expected_sha256 or {}).items()}
    sources = load_manifest(manifest_path)
    unknown = sorted(set(overrides) - {source.name for source in sources})
    if unknown:
        raise DownloadError(f"expected_sha256 names files the manifest does not list: {unknown}")
    plans = []
    for source in sources:
        urls = [f"{base_url.rstrip('/')}/{source.name}"] if base_url else list(source.urls)
        for url in urls:
            _check_url(url, allow_insecure_localhost=allow_insecure_localhost)
        plans.append((source, urls))

    paths: dict[str, Path] = {}
    for source, urls in plans:
        dest = cache / source.name
        expected = overrides.get(source.name) or source.sha256 or _read_record(dest)
        if dest.exists():
            got = sha256_file(dest)
            if expected is None or got == expected:
                logger.info("%s: in the cache (sha256 %s)", dest, got)
                _record(dest, got)
                paths[source.name] = dest
                continue
            logger.warning("%s: cached file has sha256 %s, expected %s; downloading it again", dest, got, expected)
            dest.unlink()
        failures = []
        for url in urls:
            try:
                got = fetch(
                    url,
                    dest,
                    expected_sha256=expected,
                    expected_size=source.size_bytes,
                    allow_insecure_localhost=allow_insecure_localhost,
                    timeout_seconds=timeout_seconds,
                )
                break
            except DownloadError as e:
                failures.append(e)
                logger.warning("%s", e)
        else:
            if len(failures) == 1:
                raise failures[0]
            raise DownloadError(f"{source.name}: every URL failed: " + " | ".join(str(e) for e in failures))
        if expected is None:
            logger.warning("%s: no known sha256; recorded the one seen on first download: %s", dest, got)
        _record(dest, got)
        paths[source.name] = dest
    return paths


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    allow_insecure_localhost: bool = False,
    timeout_seconds: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file; return its sha256.

    ``dest`` appears only complete and verified (os.replace). A truncated transfer raises
    DownloadError and keeps the .part file for the next call; a hash or size mismatch raises and
    deletes it.
    """
    _check_url(url, allow_insecure_localhost=allow_insecure_localhost)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    opener = _opener(url, allow_insecure_localhost=allow_insecure_localhost)
    for attempt in range(2):  # a second attempt only after a stale .part was thrown away
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = opener.open(request, timeout=timeout_seconds)
        except DownloadError:  # a redirect to a URL we refuse
            raise
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                total = _content_range_total(e.headers.get("Content-Range"))
                if total == offset:
                    logger.info("%s: partial file %s is already complete", url, part)
                    break
                logger.warning("%s: server refused to resume %s at byte %d; starting over", url, part, offset)
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from e
        with response:
            total = _receive(url, response, part, offset)
        if total is not None and part.stat().st_size != total:
            raise DownloadError(
                f"{url}: truncated: got {part.stat().st_size} of {total} bytes; kept {part} to resume"
            )
        break
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"{url}: size mismatch: expected {expected_size} bytes, got {size}; deleted the download")
    got = sha256_file(part)
    if expected_sha256 is not None and got != expected_sha256:
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch: expected {expected_sha256}, got {got}; deleted the download")
    os.replace(part, dest)
    logger.info("%s: downloaded %d bytes to %s (sha256 %s)", url, size, dest, got)
    return got


def _receive(url: str, response, part: Path, offset: int) -> int | None:
    """Append the response body to ``part`` (or rewrite it on a 200); return the full size if known."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if response.status == 206:
        start = _content_range_start(response.headers.get("Content-Range"))
        if start != offset:
            raise DownloadError(f"{url}: server resumed at byte {start}, asked for {offset}")
        mode, written = "ab", offset
    else:  # 200: the server sent the whole file (it ignored or was not asked for a Range)
        if offset:
            logger.info("%s: server does not resume; downloading %s from the start", url, part)
        mode, written = "wb", 0
    total = written + length if length is not None else None
    logger.info("%s: receiving %s bytes from byte %d", url, length if length is not None else "unknown", written)
    with open(part, mode) as stream:
        try:
            while True:
                chunk = response.read(_CHUNK_BYTES)
                if not chunk:
                    break
                stream.write(chunk)
                written += len(chunk)
        except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
            stream.flush()
            raise DownloadError(
                f"{url}: truncated: got {written} of {total if total is not None else 'unknown'} bytes "
                f"({type(e).__name__}); kept {part} to resume"
            ) from e
        stream.flush()
        os.fsync(stream.fileno())
    return total


def _check_url(url: str, *, allow_insecure_localhost: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_insecure_localhost and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise DownloadError(
        f"{url}: refusing to download: only https URLs are allowed"
        + (" (plain http only to a loopback host with allow_insecure_localhost=True)" if parts.scheme == "http" else "")
    )


def _opener(url: str, *, allow_insecure_localhost: bool) -> urllib.request.OpenerDirector:
    class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            _check_url(newurl, allow_insecure_localhost=allow_insecure_localhost)  # no https -> http downgrade
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    handlers: list = [_CheckedRedirects()]
    if urllib.parse.urlsplit(url).hostname in _LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy
    return urllib.request.build_opener(*handlers)


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _normalize_sha256(value, *, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if not _SHA256_PATTERN.match(text):
        raise DownloadError(f"{where}: {value!r} is not a hex sha256")
    return text


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_record(dest: Path) -> str | None:
    record = _record_path(dest)
    if not record.exists():
        return None
    fields = record.read_text(encoding="utf-8").split()
    return _normalize_sha256(fields[0] if fields else "", where=str(record))


def _record(dest: Path, sha256: str) -> None:
    record = _record_path(dest)
    if _read_record(dest) == sha256:
        return
    temp = record.with_name(record.name + ".tmp")
    temp.write_text(f"{sha256}  {dest.name}\n", encoding="utf-8")
    os.replace(temp, record)
