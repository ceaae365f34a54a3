"""Data fingerprints written into every manifest, so a model names exactly the bytes it was trained on."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (as stored, i.e. of the .gz for gzipped files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
