"""Content hashes of files: the names of stored submissions, checkpoint lineage, training-set fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alqa_core.errors import AlqaInputError

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path, what: str = "file") -> str:
    """sha256 hex digest of a file's bytes, read in chunks; an unreadable file is an input error naming ``what``."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK_BYTES):
                digest.update(block)
    except OSError as exc:
        raise AlqaInputError(path, f"cannot read {what}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower())
