"""convert.download against a local HTTP server on 127.0.0.1 (never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse

import pytest

from convert import download
from vggish_tf2.errors import DownloadError

CKPT = "vggish_model.ckpt"
PCA = "vggish_pca_params.npz"
FILES = {CKPT: bytes(range(256)) * 40, PCA: b"pca-bytes " * 300}  # 10240 and 3000 bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FixtureServer:
    """Serves FILES (mutable) over http://127.0.0.1, honouring 'Range: bytes=N-'.

    ``truncate_at[name] = n`` sends a full Content-Length but closes after n bytes of the body;
    ``ignore_range`` answers every request with the whole file (200); ``redirects[name] = url``
    answers 302. Every request is recorded as (path, Range header or None).
    """

    def __init__(self):
        self.files = dict(FILES)
        self.truncate_at: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                name = urllib.parse.urlsplit(self.path).path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                start = 0
                range_header = self.headers.get("Range")
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if name in server.truncate_at:
                    payload = payload[: server.truncate_at[name]]
                    self.close_connection = True
                self.wfile.write(payload)
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    with FixtureServer() as running:
        yield running


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def fetch_all(cache, server, **kwargs):
    return download.download_released_files(cache, base_url=server.base_url, allow_insecure_localhost=True, **kwargs)


def test_shipped_manifest_lists_googles_two_files_with_no_invented_hash():
    sources = download.load_manifest()
    assert [s.name for s in sources] == [CKPT, PCA]
    for source in sources:
        assert source.urls == (f"https://storage.googleapis.com/audioset/{source.name}",)
        assert source.sha256 is None and source.size_bytes is None


def test_success_puts_verified_files_in_the_cache_and_records_their_hash(cache, server):
    paths = fetch_all(cache, server)
    assert paths == {CKPT: cache / CKPT, PCA: cache / PCA}
    for name, data in FILES.items():
        assert paths[name].read_bytes() == data
        assert (cache / f"{name}.sha256").read_text().split() == [sha(data), name]
    assert sorted(p.name for p in cache.iterdir()) == sorted([CKPT, PCA, f"{CKPT}.sha256", f"{PCA}.sha256"])
    assert server.requests == [(CKPT, None), (PCA, None)]
    # a second call is served from the cache
    assert fetch_all(cache, server) == paths
    assert len(server.requests) == 2


def test_expected_hash_is_checked_and_a_mismatch_leaves_nothing(cache, server):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=rf"/{CKPT}: sha256 mismatch: expected {wrong}, got {sha(FILES[CKPT])}"):
        fetch_all(cache, server, expected_sha256={CKPT: wrong})
    assert not (cache / CKPT).exists() and not (cache / f"{CKPT}.part").exists()
    assert not (cache / f"{CKPT}.sha256").exists()
    paths = fetch_all(cache, server, expected_sha256={CKPT: sha(FILES[CKPT]).upper()})  # hex case is ignored
    assert paths[CKPT].read_bytes() == FILES[CKPT]


def test_truncated_transfer_keeps_the_part_and_the_next_call_resumes(cache, server):
    server.truncate_at[CKPT] = 4000
    with pytest.raises(DownloadError, match=rf"/{CKPT}: truncated: got 4000 of 10240 bytes; kept .*\.part to resume"):
        fetch_all(cache, server)
    assert not (cache / CKPT).exists()
    assert (cache / f"{CKPT}.part").read_bytes() == FILES[CKPT][:4000]

    del server.truncate_at[CKPT]
    paths = fetch_all(cache, server, expected_sha256={CKPT: sha(FILES[CKPT])})
    assert paths[CKPT].read_bytes() == FILES[CKPT]
    assert server.requests[-2:] == [(CKPT, "bytes=4000-"), (PCA, None)]
    assert not (cache / f"{CKPT}.part").exists()


def test_an_existing_part_file_is_resumed_not_refetched(cache, server):
    cache.mkdir()
    (cache / f"{CKPT}.part").write_bytes(FILES[CKPT][:300])
    paths = fetch_all(cache, server)
    assert paths[CKPT].read_bytes() == FILES[CKPT]
    assert server.requests[0] == (CKPT, "bytes=300-")


def test_a_complete_part_file_is_finished_without_a_body(cache, server):
    cache.mkdir()
    (cache / f"{CKPT}.part").write_bytes(FILES[CKPT])
    paths = fetch_all(cache, server, expected_sha256={CKPT: sha(FILES[CKPT])})
    assert paths[CKPT].read_bytes() == FILES[CKPT]
    assert server.requests[0] == (CKPT, f"bytes={len(FILES[CKPT])}-")  # answered 416 "bytes */10240"


def test_a_server_that_ignores_range_gets_the_whole_file_rewritten(cache, server):
    cache.mkdir()
    (cache / f"{CKPT}.part").write_bytes(b"stale" * 10)
    server.ignore_range = True
    paths = fetch_all(cache, server)
    assert paths[CKPT].read_bytes() == FILES[CKPT]


def test_a_corrupt_part_fails_the_hash_and_is_deleted(cache, server):
    cache.mkdir()
    (cache / f"{CKPT}.part").write_bytes(b"\xff" * 300)  # right length prefix, wrong bytes
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_all(cache, server, expected_sha256={CKPT: sha(FILES[CKPT])})
    assert not (cache / f"{CKPT}.part").exists()
    assert fetch_all(cache, server, expected_sha256={CKPT: sha(FILES[CKPT])})[CKPT].read_bytes() == FILES[CKPT]


def test_first_seen_hash_is_trusted_after(cache, server):
    fetch_all(cache, server)
    (cache / CKPT).write_bytes(b"corrupted on disk")
    assert fetch_all(cache, server)[CKPT].read_bytes() == FILES[CKPT]  # re-fetched: differs from the record
    (cache / CKPT).unlink()
    server.files[CKPT] = b"the upstream file changed"
    with pytest.raises(DownloadError, match=rf"sha256 mismatch: expected {sha(FILES[CKPT])}, got {sha(server.files[CKPT])}"):
        fetch_all(cache, server)
    assert not (cache / CKPT).exists()


def test_size_from_the_manifest_is_checked(cache, server, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": [
        {"name": CKPT, "urls": [f"{server.base_url}/{CKPT}"], "sha256": None, "size_bytes": 99},
    ]}))
    with pytest.raises(DownloadError, match=r"size mismatch: expected 99 bytes, got 10240"):
        download.download_released_files(cache, manifest_path=manifest, allow_insecure_localhost=True)
    assert not any(cache.iterdir())


def test_manifest_urls_are_tried_in_order(cache, server, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sources": [
        {"name": PCA, "urls": [f"{server.base_url}/missing.npz", f"{server.base_url}/{PCA}"],
         "sha256": sha(FILES[PCA]), "size_bytes": len(FILES[PCA])},
    ]}))
    paths = download.download_released_files(cache, manifest_path=manifest, allow_insecure_localhost=True)
    assert paths == {PCA: cache / PCA} and paths[PCA].read_bytes() == FILES[PCA]
    assert [name for name, _ in server.requests] == ["missing.npz", PCA]


def test_http_error_names_the_url(cache, server):
    server.files.pop(PCA)
    with pytest.raises(DownloadError, match=rf"{server.base_url}/{PCA}: HTTP 404"):
        fetch_all(cache, server)


@pytest.mark.parametrize(
    "base_url, allow, message",
    [
        ("http://example.com/audioset", True, "only https URLs are allowed"),
        ("ftp://example.com/audioset", True, "only https URLs are allowed"),
        ("file:///etc", True, "only https URLs are allowed"),
    ],
)
def test_non_https_urls_are_refused_before_any_request(cache, base_url, allow, message):
    with pytest.raises(DownloadError, match=message):
        download.download_released_files(cache, base_url=base_url, allow_insecure_localhost=allow)


def test_plain_http_to_loopback_needs_the_explicit_flag(cache, server):
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1.*refusing.*allow_insecure_localhost=True"):
        download.download_released_files(cache, base_url=server.base_url)
    assert server.requests == []


def test_a_redirect_to_plain_http_elsewhere_is_refused(cache, server):
    server.redirects[CKPT] = "http://example.invalid/vggish_model.ckpt"
    with pytest.raises(DownloadError, match=r"http://example\.invalid/vggish_model\.ckpt: refusing"):
        fetch_all(cache, server)
    assert not (cache / CKPT).exists()


def test_bad_expected_hashes_are_refused(cache, server):
    with pytest.raises(DownloadError, match=r"expected_sha256\['vggish_model.ckpt'\]: 'abc' is not a hex sha256"):
        fetch_all(cache, server, expected_sha256={CKPT: "abc"})
    with pytest.raises(DownloadError, match=r"names files the manifest does not list: \['other.bin'\]"):
        fetch_all(cache, server, expected_sha256={"other.bin": "0" * 64})
