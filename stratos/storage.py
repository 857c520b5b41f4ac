"""The artifact store: where stages put what they produce and read it back by URI.

Stages pass URIs, not objects (STYLE.md): a stage writes its dataset, model
directory or report here and returns `uri_for(key)`. Two stores share one
interface, picked by URI scheme from a dict literal: a local directory
(`file://`, the default, rooted at `$STRATOS_HOME/artifacts` or
`./.stratos/artifacts`) and S3 or any S3-compatible server (`s3://`).

What a reader can rely on:
- A single object is all or nothing: locally it is written under a temporary
  name and `os.replace`d into place; an S3 PUT (multipart or not) is atomic.
- A directory exists only once its `_COMPLETE` marker does. The marker is
  written last and holds the manifest (relative path, size, sha256 per file),
  so a half-written directory reads as absent, never as a smaller model.
- Reads verify size and sha256 against what the store recorded and raise
  `StorageError` naming the key and the file on any mismatch.

Credentials go straight into the boto3 client and are never kept, logged or
returned; reprs and records show bucket, prefix and endpoint only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from stratos.errors import Unreachable
from stratos.files import file_digest

log = logging.getLogger(__name__)

MARKER = "_COMPLETE"  # last file of a published directory; holds its manifest
PENDING = "_PENDING"  # S3 only: set while a directory upload is in flight (local uses a temp dir)
MANIFEST_FORMAT = "stratos-dir/1"
MIB = 1024 * 1024
_CHUNK = 4 * MIB


class StorageError(RuntimeError):
    """An artifact could not be written or read intact."""


class ArtifactNotFoundError(StorageError, FileNotFoundError):
    """No published artifact under the key (an unfinished directory counts as absent)."""


class StoreUnreachable(StorageError, Unreachable):
    """The store's server does not answer (nothing listening, a timeout): the run cannot start or go on."""


@dataclass(frozen=True)
class Artifact:
    """What a put returns: enough for a stage result and a content-based cache key, and no secrets."""

    key: str
    uri: str
    size: int  # bytes; for a directory, the sum over its files
    sha256: str  # of the bytes; for a directory, of its manifest, so equal content gives equal ids
    files: int = 1


def stratos_home() -> Path:
    """`$STRATOS_HOME`, else `.stratos` under the current directory."""
    return Path(os.environ.get("STRATOS_HOME") or ".stratos").expanduser().resolve()


def writable_dir(path: Path, what: str) -> None:
    """Raise StorageError unless `path` is, or could be made, a directory this process writes to.

    A missing directory is probed at its nearest existing parent, so the check creates nothing.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(
            f"{what} '{path}' cannot be a directory: '{existing}' is a file; choose a directory path"
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".stratos-probe-"):
            pass
    except OSError as err:
        where = "" if existing == path else f" (its parent '{existing}' does not allow creating it)"
        raise StorageError(
            f"{what} '{path}' is not writable{where}: {err.strerror}; choose a directory you can write to "
            "or fix its permissions"
        ) from None


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative POSIX key, else raise naming the fix."""
    parts = key.split("/")
    bad = (
        not key
        or key.startswith("/")
        or "\\" in key
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or parts[-1] in (MARKER, PENDING)
    )
    if bad:
        raise ValueError(
            f"artifact key {key!r} is not valid: use a relative path like 'runs/demo/model' with no empty, "
            f"'.'/'..' or dot-prefixed parts, no backslashes, and not ending in {MARKER} or {PENDING}"
        )
    return key


def _copy_hashing(src: Path, dest: Path) -> tuple[int, str]:
    """Copy src to dest in one pass, returning (size, sha256) of what was copied."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def _source_files(src: Path) -> list[str]:
    """Relative POSIX paths of every file under src (symlinks followed: HF caches use them)."""
    if not src.is_dir():
        raise StorageError(f"put_dir source '{src}' is not a directory; pass the model/output directory")
    found = []
    for dirpath, _dirs, names in os.walk(src, followlinks=True):
        for name in names:
            found.append((Path(dirpath) / name).relative_to(src).as_posix())
    reserved = [p for p in found if PurePosixPath(p).name in (MARKER, PENDING)]
    if reserved:
        raise StorageError(
            f"put_dir source '{src}' contains '{reserved[0]}', a name the store reserves; rename it"
        )
    return sorted(found)


def manifest_bytes(files: list[dict[str, Any]]) -> bytes:
    """The marker's content: canonical JSON, so equal directories give byte-equal markers."""
    entries = sorted(files, key=lambda e: e["path"])
    return json.dumps({"format": MANIFEST_FORMAT, "files": entries}, sort_keys=True, indent=1).encode()


def _parse_manifest(raw: bytes, where: str) -> list[dict[str, Any]]:
    """The manifest's file entries; refuses paths that would escape the directory on download."""
    try:
        data = json.loads(raw)
        entries = [
            {"path": str(e["path"]), "size": int(e["size"]), "sha256": str(e["sha256"])}
            for e in data["files"]
        ]
    except (ValueError, KeyError, TypeError) as err:
        entries, data = [], {"format": f"unreadable ({err!r})"}
    unsafe = [e["path"] for e in entries if e["path"].startswith("/") or ".." in e["path"].split("/")]
    if data.get("format") != MANIFEST_FORMAT or unsafe:
        raise StorageError(
            f"{where}: the {MARKER} marker is not a valid {MANIFEST_FORMAT} manifest "
            f"(format {data.get('format')!r}, unsafe paths {unsafe[:3]}); re-upload the directory"
        )
    return entries


def _verify(where: str, name: str, want: tuple[int | None, str | None], got: tuple[int, str]) -> None:
    """Raise if a read file's (size, sha256) differs from what the store recorded."""
    (want_size, want_sha), (got_size, got_sha) = want, got
    if want_size is not None and got_size != want_size:
        problem = f"has {got_size} bytes but {want_size} were recorded (truncated or overwritten)"
    elif want_sha is not None and got_sha != want_sha:
        problem = f"has sha256 {got_sha[:12]}… but {want_sha[:12]}… was recorded (corrupted)"
    else:
        return
    raise StorageError(f"{where}: '{name}' {problem}; re-run the stage that wrote it or re-upload it")


def _temp_sibling(path: Path, tag: str) -> Path:
    # Dot-prefixed, so listings skip it and a crash leaves nothing a reader mistakes for the artifact.
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def _temp_beside(dest: Path, directory: bool = False) -> Iterator[Path]:
    """A hidden temporary file path (or created directory) next to dest, removed if the block fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dest, "tmp")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _swap_dir(tmp: Path, dest: Path) -> None:
    """Put the finished directory tmp at dest, replacing any older one (readers see old, absent, or new)."""
    old = None
    if dest.exists():
        old = _temp_sibling(dest, "old")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ArtifactStore:
    """The interface both stores implement; the byte/JSON helpers are shared."""

    def uri_for(self, key: str) -> str:
        """The URI of key: file:///... or s3://bucket/prefix/key ('' gives the store's root)."""
        raise NotImplementedError

    def put_file(self, key: str, src: str | Path) -> Artifact:
        """Store one file atomically under key."""
        raise NotImplementedError

    def put_dir(self, key: str, src: str | Path) -> Artifact:
        """Store every file under src; key becomes visible only when all are in, with its manifest."""
        raise NotImplementedError

    def get_file(self, key: str, dest: str | Path | None = None) -> Path:
        """A verified local copy of the file (dest, else in place or the download cache)."""
        raise NotImplementedError

    def get_dir(self, key: str, dest: str | Path | None = None) -> Path:
        """A verified local copy of the directory (dest, else in place or the download cache)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise StorageError naming the store and the fix unless a run can write here (seconds at most)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Whether key holds a file or a complete directory."""
        raise NotImplementedError

    def is_dir(self, key: str) -> bool:
        """Whether key holds a complete directory."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Published keys under prefix; a directory is one key, its files are not listed."""
        raise NotImplementedError

    def key_for(self, uri: str) -> str:
        """The key of an artifact URI in this store (the inverse of uri_for)."""
        base = self.uri_for("").rstrip("/") + "/"
        if not uri.startswith(base):
            raise ValueError(
                f"URI '{uri}' is not inside this store ({base}); use from_uri(uri) or fetch(uri)"
            )
        key = uri.removeprefix(base).strip("/")
        return check_key(unquote(key) if base.startswith("file:") else key)  # file URIs are percent-encoded

    def put_bytes(self, key: str, data: bytes) -> Artifact:
        with tempfile.TemporaryDirectory(prefix="stratos-put-") as tmp:
            path = Path(tmp) / "data"
            path.write_bytes(data)
            return self.put_file(key, path)

    def put_json(self, key: str, obj: Any) -> Artifact:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def get_bytes(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="stratos-get-") as tmp:
            return self.get_file(key, Path(tmp) / "data").read_bytes()

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))


class LocalStore(ArtifactStore):
    """Artifacts as files under a root directory; a `.{name}.meta.json` sidecar records size and sha256."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else stratos_home() / "artifacts"

    def __repr__(self) -> str:
        return f"LocalStore(root='{self.root}')"

    def uri_for(self, key: str) -> str:
        return (self._path(key) if key else self.root).as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def check(self) -> None:
        """The root is a directory this process can write, or can create: probed, nothing left behind."""
        writable_dir(self.root, "the artifact store (storage.uri)")

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.parent / f".{path.name}.meta.json"

    def put_file(self, key: str, src: str | Path) -> Artifact:
        dest = self._path(key)
        if dest.is_dir():
            raise StorageError(
                f"key '{key}' in {self.root} is a directory artifact; put the file under another key"
            )
        # Sidecar out first, new one in last: a crash in between leaves an unverified file, never a false mismatch.
        self._sidecar(dest).unlink(missing_ok=True)
        with _temp_beside(dest) as tmp:
            size, sha = _copy_hashing(Path(src), tmp)
            os.replace(tmp, dest)
        with _temp_beside(self._sidecar(dest)) as tmp:
            tmp.write_text(json.dumps({"size": size, "sha256": sha}))
            os.replace(tmp, self._sidecar(dest))
        log.info("stored %s (%d bytes)", self.uri_for(key), size)
        return Artifact(key, self.uri_for(key), size, sha)

    def put_dir(self, key: str, src: str | Path) -> Artifact:
        src, dest = Path(src), self._path(key)
        if dest.is_file():
            raise StorageError(
                f"key '{key}' in {self.root} holds a file; put the directory under another key"
            )
        names = _source_files(src)
        with _temp_beside(dest, directory=True) as tmp:
            entries = []
            for name in names:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                size, sha = _copy_hashing(src / name, tmp / name)
                entries.append({"path": name, "size": size, "sha256": sha})
            marker = manifest_bytes(entries)
            (tmp / MARKER).write_bytes(marker)
            _swap_dir(tmp, dest)
        total = sum(e["size"] for e in entries)
        log.info("stored directory %s (%d files, %d bytes)", self.uri_for(key), len(entries), total)
        return Artifact(key, self.uri_for(key), total, hashlib.sha256(marker).hexdigest(), len(entries))

    def get_file(self, key: str, dest: str | Path | None = None) -> Path:
        """Verify the file; return it in place, or a verified copy at dest."""
        src = self._path(key)
        if not src.is_file():
            raise ArtifactNotFoundError(
                f"no file artifact '{key}' in {self.root}; check the key or run the stage that writes it"
            )
        sidecar = self._sidecar(src)
        # A file some other tool put under the root has no sidecar: only its existence can be checked.
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {"size": None, "sha256": None}
        if dest is None:
            _verify(self.uri_for(key), key, (meta["size"], meta["sha256"]), file_digest(src))
            return src
        dest = Path(dest)
        with _temp_beside(dest) as tmp:
            _verify(self.uri_for(key), key, (meta["size"], meta["sha256"]), _copy_hashing(src, tmp))
            os.replace(tmp, dest)
        return dest

    def _manifest(self, key: str) -> list[dict[str, Any]]:
        marker = self._path(key) / MARKER
        if not marker.is_file():
            raise ArtifactNotFoundError(
                f"no complete directory artifact '{key}' in {self.root} (a directory without its {MARKER} "
                "marker is unfinished and treated as absent); re-run the stage that writes it"
            )
        return _parse_manifest(marker.read_bytes(), self.uri_for(key))

    def get_dir(self, key: str, dest: str | Path | None = None) -> Path:
        """Verify the directory; return it in place, or a verified copy at dest."""
        entries, src = self._manifest(key), self._path(key)
        if dest is None:
            for e in entries:
                _verify(self.uri_for(key), e["path"], (e["size"], e["sha256"]), file_digest(src / e["path"]))
            return src
        dest = Path(dest)
        with _temp_beside(dest, directory=True) as tmp:
            for e in entries:
                (tmp / e["path"]).parent.mkdir(parents=True, exist_ok=True)
                got = _copy_hashing(src / e["path"], tmp / e["path"])
                _verify(self.uri_for(key), e["path"], (e["size"], e["sha256"]), got)
            shutil.copyfile(src / MARKER, tmp / MARKER)
            _swap_dir(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.is_file() or (path / MARKER).is_file()

    def is_dir(self, key: str) -> bool:
        return (self._path(key) / MARKER).is_file()

    def list(self, prefix: str = "") -> list[str]:
        """Published keys under prefix: files, and directories as one key each."""
        start = self._path(prefix) if prefix else self.root
        if start.is_file() or (start / MARKER).is_file():
            return [prefix]
        found = []
        for dirpath, dirs, names in os.walk(start):
            here = Path(dirpath)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for d in list(dirs):
                if (here / d / MARKER).is_file():
                    found.append((here / d).relative_to(self.root).as_posix())
                    dirs.remove(d)  # its files belong to the directory artifact
            found += [(here / n).relative_to(self.root).as_posix() for n in names if not n.startswith(".")]
        return sorted(found)


def _open_s3(parsed: Any, options: dict[str, Any]) -> ArtifactStore:
    from stratos.storage_s3 import S3Store  # here, so a local-only run never imports boto3

    if not parsed.netloc:
        raise ValueError(f"artifact URI '{parsed.geturl()}' names no bucket; use s3://BUCKET/PREFIX")
    return S3Store(parsed.netloc, parsed.path.strip("/"), **options)


# URI scheme -> how to open a store rooted at that URI ('' is a plain local path).
_STORES = {
    "file": lambda parsed, options: LocalStore(unquote(parsed.path)),
    "": lambda parsed, options: LocalStore(parsed.path),
    "s3": _open_s3,
}


def from_uri(uri: str, **s3_options: Any) -> ArtifactStore:
    """A store rooted at uri (`file:///dir`, a plain path, or `s3://bucket/prefix`).

    s3_options (endpoint_url, region, aws_access_key_id, aws_secret_access_key) go to S3Store;
    without them boto3's usual environment/config chain applies.
    """
    parsed = urlparse(uri)
    opener = _STORES.get(parsed.scheme)
    if opener is None:
        raise ValueError(
            f"artifact URI '{uri}' has scheme '{parsed.scheme}'; use file://, a local path or s3://"
        )
    return opener(parsed, s3_options)


def fetch(uri: str, dest: str | Path | None = None, **s3_options: Any) -> Path:
    """A local, verified path for the file or directory artifact at uri (S3 objects are downloaded)."""
    parent, _, key = uri.rstrip("/").rpartition("/")
    parent = parent or "."  # a bare name is relative to the current directory
    key = unquote(key) if parent.startswith("file:") else key  # file URIs are percent-encoded
    store = from_uri(parent, **s3_options)
    return store.get_dir(key, dest) if store.is_dir(key) else store.get_file(key, dest)
