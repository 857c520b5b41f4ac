"""Writing, hashing, reading and locking files the one way Stratos does it.

A file is written under a unique hidden temporary name beside its target and
renamed into place, so a reader (or a later run) sees the old file or the new
one, never half of one; the temporary file is removed if the write fails.
Hashes are computed in chunks. A user's text file is read with `read_utf8`, which names
the file, the line and the byte when it is not UTF-8. Locks are flocks (see below).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

CHUNK = 1 << 20
log = logging.getLogger(__name__)


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


class FileRef(BaseModel):
    """A file (or folder) a stage reads, with its content hash: an edit in place changes the stage's cache key."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> FileRef:
        path = Path(path).expanduser()
        return cls(path=str(path), sha256=content_digest(path))


def read_utf8(path: str | Path, what: str) -> str:
    """A text file's content; a file that is not UTF-8 fails naming it, the line and the byte.

    `what` says what the file is to the user ("task.dataset", "catalog", "spec file").
    """
    path = Path(path)
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise ValueError(
            f"{what} '{path}' is a binary file (it holds NUL bytes), not UTF-8 text; give a text file"
        )
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is not content
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{what} '{path}' is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (offset "
            f"{exc.start}) is not valid UTF-8; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


# --- locks -----------------------------------------------------------------------------------
#
# An exclusive flock on a file per piece of work. The kernel drops it when its process exits,
# however that happens (SIGKILL included), so a crashed run never leaves a lock that blocks the
# next one; the lock file itself stays (removing it would race with a waiter that opened it).


def holder_record() -> dict[str, Any]:
    """Who holds a lock, for the message a waiting run prints: pid, host, start time, command."""
    args = sys.orig_argv[1:]  # without the interpreter: 'stratos run x.yaml', '-m stratos.cli run x.yaml'
    if args and not args[0].startswith("-"):
        args[0] = Path(args[0]).name
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(args)[:200],
    }


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on path, or None when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder_record()).encode())
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def describe_holder(path: Path) -> str:
    """'run pid 123 on host (since ..., `stratos run x.yaml`)' from the lock file, as well as it can be read."""
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} (since {h['since']}, `{h['command']}`)"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


REUSE = "waiting for it, then reusing its result (or use another STRATOS_HOME)"


def wait_lock(
    path: Path, what: str, timeout_s: float | None = None, then: str = REUSE, poll_s: float = 0.2
) -> int | None:
    """Lock path, waiting while another process holds it (said once, then every minute); None on timeout.

    `then` ends the message a waiting run logs: what it will do once the lock is free.
    """
    fd = try_lock(path)
    started = last = time.monotonic()
    if fd is None:
        log.info("%s: %s is already producing this; %s", what, describe_holder(path), then)
    while fd is None:
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return None
        time.sleep(poll_s)
        if time.monotonic() - last > 60:
            last = time.monotonic()
            log.info("%s: still waiting for %s (%.0f s)", what, describe_holder(path), last - started)
        fd = try_lock(path)
    return fd


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on path for the block; while another process holds it, wait for it."""
    fd = wait_lock(path, what)
    assert fd is not None  # no timeout: waits until it has the lock
    try:
        yield
    finally:
        unlock(fd)
