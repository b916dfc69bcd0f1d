"""sha256 of files, read in chunks: sources, exports and downloads are hashed the same way.

No TensorFlow here, so the downloader and the pipeline can use it without importing TF.
"""
from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
