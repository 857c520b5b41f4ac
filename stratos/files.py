"""Writing and hashing files the one way Stratos does it: atomically, and in chunks.

A file is written under a unique hidden temporary name beside its target and
renamed into place, so a reader (or a later run) sees the old file or the new
one, never half of one; the temporary file is removed if the write fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str, ensure_ascii=False))


def file_digest(path: str | Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def dir_digest(path: str | Path) -> str:
    """sha256 over every file of a directory (relative path, size and content hash), in a stable order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        size, sha = file_digest(file)
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """sha256 of a file or a directory (see dir_digest)."""
    path = Path(path)
    return dir_digest(path) if path.is_dir() else file_digest(path)[1]
