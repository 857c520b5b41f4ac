"""The S3 artifact store: AWS S3 or any S3-compatible server (MinIO, Ceph, moto), through boto3.

Same interface and guarantees as `stratos.storage.LocalStore`, mapped onto
what S3 offers. S3 has no rename, but a PUT (multipart included) is atomic
per object, so:
- a file records its sha256 in the object's metadata and its size is the
  object's length; reads check both;
- a directory upload first writes `KEY/_PENDING` and removes an older
  `KEY/_COMPLETE`, uploads every file, writes the new `_COMPLETE` manifest,
  and only then deletes stale files and `_PENDING`. A reader that finds no
  `_COMPLETE` treats the directory as absent; an upload that dies half-way
  leaves `_PENDING`, which hides its files from `list`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from pydantic import SecretStr

from stratos.files import file_digest
from stratos.storage import (
    MARKER,
    MIB,
    PENDING,
    Artifact,
    ArtifactNotFoundError,
    ArtifactStore,
    StorageError,
    StoreUnreachable,
    _parse_manifest,
    _source_files,
    _swap_dir,
    _temp_beside,
    _verify,
    check_key,
    manifest_bytes,
    stratos_home,
)

log = logging.getLogger("stratos.storage")

# Files above 8 MiB go up in 8 MiB parts: big enough to keep the request count low for
# multi-GB weights, small enough that a 20 MiB test file takes the multipart path.
TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _redact_credential(record: logging.LogRecord) -> bool:
    """Hide the access key ID that botocore's DEBUG wire log prints in each Authorization header."""
    message = record.getMessage()
    if "Credential=" in message:
        record.msg, record.args = re.sub(r"Credential=[^/,\s]+", "Credential=**********", message), ()
    return True


# botocore.endpoint is the one logger that prints request headers; the secret key is never logged.
logging.getLogger("botocore.endpoint").addFilter(_redact_credential)


def _reveal(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class S3Store(ArtifactStore):
    """Artifacts as objects under s3://bucket/prefix/."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        aws_access_key_id: SecretStr | str | None = None,
        aws_secret_access_key: SecretStr | str | None = None,
        transfer: TransferConfig = TRANSFER,
    ):
        if not bucket or "/" in bucket:
            raise ValueError(
                f"S3 bucket {bucket!r} is not a bucket name; give e.g. 'my-artifacts' (the path goes in prefix)"
            )
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ValueError(
                "S3 credentials: aws_access_key_id and aws_secret_access_key must be given together; "
                "set both, or neither to use boto3's environment/config chain"
            )
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url, self.region, self.transfer = endpoint_url, region, transfer
        # The keys go into the client and nowhere else: this object never holds them.
        session = boto3.session.Session(
            aws_access_key_id=_reveal(aws_access_key_id),
            aws_secret_access_key=_reveal(aws_secret_access_key),
            region_name=region,
        )
        # S3-compatible servers mostly want the bucket in the path, not the hostname.
        addressing = {"addressing_style": "path"} if endpoint_url else {}
        config = Config(s3=addressing, retries={"max_attempts": 5, "mode": "standard"})
        self._client = session.client("s3", endpoint_url=endpoint_url, config=config)
        # For check(): one try with short timeouts, so a dead endpoint is reported in seconds, not minutes.
        quick = Config(s3=addressing, connect_timeout=3, read_timeout=5, retries={"max_attempts": 1})
        self._quick = session.client("s3", endpoint_url=endpoint_url, config=quick)

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def _obj(self, key: str) -> str:
        """The object name for a store key ('' is the prefix itself)."""
        if key:
            check_key(key)
        return "/".join(p for p in (self.prefix, key) if p)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._obj(key)}".rstrip("/")

    def _cache_path(self, key: str) -> Path:
        return stratos_home() / "cache" / "s3" / self.bucket / self._obj(key)

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        """Turn boto errors into StorageError naming the artifact (no cause chain: it can echo request details)."""
        try:
            yield
        except ClientError as err:
            error = err.response.get("Error", {})
            code, message = str(error.get("Code", "")), error.get("Message", "")
            if code in _NOT_FOUND:
                raise ArtifactNotFoundError(
                    f"no artifact '{key}' at {self.uri_for(key)}; check the key"
                ) from None
            raise StorageError(
                f"S3 {action} of '{key}' at {self.uri_for(key)} failed: {code} {message}; "
                "check the bucket, endpoint_url, region and credentials"
            ) from None
        except (BotoCoreError, Boto3Error) as err:  # Boto3Error: upload_file wraps failures in its own type
            raise StoreUnreachable(
                f"S3 {action} of '{key}' at {self.uri_for(key)} failed: {type(err).__name__}: {err}; "
                "check endpoint_url and that the server is reachable"
            ) from None

    def check(self) -> None:
        """The bucket answers and these credentials may use it (one HEAD request, short timeouts)."""
        where = f"storage s3://{self.bucket}/{self.prefix} at {self._quick.meta.endpoint_url}"
        try:
            self._quick.head_bucket(Bucket=self.bucket)
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
            raise StoreUnreachable(
                f"{where} does not answer ({type(err).__name__}); start the S3 server or fix endpoint_url"
            ) from None
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            fix = {
                "404": "the bucket does not exist: create it or fix storage.uri",
                "NoSuchBucket": "the bucket does not exist: create it or fix storage.uri",
                "403": "access denied: check the credentials and the bucket policy",
            }.get(code, "check the bucket, region and credentials")
            raise StorageError(f"{where}: {code or 'error'}; {fix}") from None
        except (BotoCoreError, Boto3Error) as err:
            raise StoreUnreachable(
                f"{where} failed: {type(err).__name__}; check endpoint_url and credentials"
            ) from None

    def _head(self, obj: str) -> dict[str, Any] | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=obj)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in _NOT_FOUND:
                return None
            raise

    def _upload(self, src: Path, obj: str, sha256: str) -> None:
        self._client.upload_file(
            str(src), self.bucket, obj, ExtraArgs={"Metadata": {"sha256": sha256}}, Config=self.transfer
        )

    def put_file(self, key: str, src: str | Path) -> Artifact:
        size, sha = file_digest(Path(src))
        with self._errors(key, "upload"):
            self._upload(Path(src), self._obj(key), sha)
        log.info("stored %s (%d bytes)", self.uri_for(key), size)
        return Artifact(key, self.uri_for(key), size, sha)

    def put_dir(self, key: str, src: str | Path) -> Artifact:
        src, base = Path(src), self._obj(check_key(key))
        names = _source_files(src)
        entries = []
        with self._errors(key, "directory upload"):
            # Hide the directory before touching it: readers see the old version or nothing, never a mix.
            self._client.put_object(Bucket=self.bucket, Key=f"{base}/{PENDING}", Body=b"")
            self._client.delete_object(Bucket=self.bucket, Key=f"{base}/{MARKER}")
            for name in names:
                size, sha = file_digest(src / name)
                self._upload(src / name, f"{base}/{name}", sha)
                entries.append({"path": name, "size": size, "sha256": sha})
            marker = manifest_bytes(entries)
            self._client.put_object(Bucket=self.bucket, Key=f"{base}/{MARKER}", Body=marker)
            keep = {f"{base}/{name}" for name in names} | {f"{base}/{MARKER}"}
            self._delete(
                [o for o in self._objects(base + "/") if o not in keep]
            )  # stale files, then _PENDING
        total = sum(e["size"] for e in entries)
        log.info("stored directory %s (%d files, %d bytes)", self.uri_for(key), len(entries), total)
        return Artifact(key, self.uri_for(key), total, hashlib.sha256(marker).hexdigest(), len(entries))

    def get_file(self, key: str, dest: str | Path | None = None) -> Path:
        """Download and verify the object to dest (default: the local cache)."""
        dest = Path(dest) if dest is not None else self._cache_path(key)
        with self._errors(key, "download"):
            head = self._head(self._obj(key))
            if head is None:
                raise ArtifactNotFoundError(f"no file artifact '{key}' at {self.uri_for(key)}; check the key")
            # An object uploaded by another tool has no recorded sha256: only its size can be checked.
            want = (head["ContentLength"], head.get("Metadata", {}).get("sha256"))
            with _temp_beside(dest) as tmp:
                self._client.download_file(self.bucket, self._obj(key), str(tmp), Config=self.transfer)
                _verify(self.uri_for(key), key, want, file_digest(tmp))
                os.replace(tmp, dest)
        return dest

    def _marker(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=f"{self._obj(key)}/{MARKER}")["Body"]
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in _NOT_FOUND:
                raise ArtifactNotFoundError(
                    f"no complete directory artifact '{key}' at {self.uri_for(key)} (a directory without its "
                    f"{MARKER} marker is unfinished and treated as absent); re-run the stage that writes it"
                ) from None
            raise
        return body.read()

    def get_dir(self, key: str, dest: str | Path | None = None) -> Path:
        """Download and verify the directory to dest (default: the local cache, reused while unchanged)."""
        dest = Path(dest) if dest is not None else self._cache_path(key)
        with self._errors(key, "directory download"):
            marker = self._marker(key)
            entries = _parse_manifest(marker, self.uri_for(key))
            if _cached(dest, marker, entries):
                return dest
            with _temp_beside(dest, directory=True) as tmp:
                for e in entries:
                    (tmp / e["path"]).parent.mkdir(parents=True, exist_ok=True)
                    obj = f"{self._obj(key)}/{e['path']}"
                    self._client.download_file(self.bucket, obj, str(tmp / e["path"]), Config=self.transfer)
                    _verify(
                        self.uri_for(key), e["path"], (e["size"], e["sha256"]), file_digest(tmp / e["path"])
                    )
                (tmp / MARKER).write_bytes(marker)
                _swap_dir(tmp, dest)
        return dest

    def is_dir(self, key: str) -> bool:
        with self._errors(key, "lookup"):
            return self._head(f"{self._obj(key)}/{MARKER}") is not None

    def exists(self, key: str) -> bool:
        with self._errors(key, "lookup"):
            return self._head(self._obj(key)) is not None or self.is_dir(key)

    def _objects(self, prefix: str) -> list[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _delete(self, objs: list[str]) -> None:
        for start in range(0, len(objs), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": o} for o in objs[start : start + 1000]]
            self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def list(self, prefix: str = "") -> list[str]:
        """Published keys under prefix: files, and complete directories as one key each."""
        with self._errors(prefix, "listing"):
            objs = self._objects(self._obj(prefix))
        skip = len(self.prefix) + 1 if self.prefix else 0
        keys = [o[skip:] for o in objs]
        if prefix:
            keys = [k for k in keys if k == prefix or k.startswith(prefix + "/")]
        complete = {k.rpartition("/")[0] for k in keys if k.endswith("/" + MARKER)}
        pending = {k.rpartition("/")[0] for k in keys if k.endswith("/" + PENDING)} - complete
        found = set()
        for k in keys:
            parents = ["/".join(k.split("/")[:i]) for i in range(1, k.count("/") + 1)]
            owner = next((p for p in parents if p in complete or p in pending), None)
            if owner is None:
                found.add(k)
            elif owner in complete:
                found.add(owner)
        return sorted(found)


def _cached(dest: Path, marker: bytes, entries: list[dict[str, Any]]) -> bool:
    """Whether dest already holds this exact directory (same manifest, files of the recorded sizes)."""
    try:
        same = (dest / MARKER).read_bytes() == marker
    except OSError:
        return False
    return same and all(
        (dest / e["path"]).is_file() and (dest / e["path"]).stat().st_size == e["size"] for e in entries
    )
