"""The artifact store, local and S3, with S3 spoken over HTTP to a real moto server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import boto3
import pytest

from stratos import storage
from stratos.storage import (
    MARKER,
    PENDING,
    ArtifactNotFoundError,
    ArtifactStore,
    LocalStore,
    StorageError,
    check_key,
    fetch,
    from_uri,
)
from stratos.storage_s3 import S3Store

MIB = 1024 * 1024
KEY_ID, SECRET = "AKIDTESTSTORAGE0001", "planted-secret-storage-0001"


@pytest.fixture(autouse=True)
def stratos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the download cache inside the test's tmp dir."""
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _s3_store(endpoint: str, prefix: str = "runs") -> S3Store:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=bucket)
    return S3Store(
        bucket,
        prefix,
        endpoint_url=endpoint,
        region="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    return _s3_store(request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model-like directory with a nested file and an empty one."""
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 32}))
    (root / "model.safetensors").write_bytes(os.urandom(50_000))
    (root / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    (root / "empty.txt").write_bytes(b"")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _raw(store: S3Store):
    return store._client  # the test reaches past the store to damage objects the way a bad upload would


def test_bytes_and_json_round_trip(store: ArtifactStore) -> None:
    record = store.put_bytes("reports/raw.bin", b"\x00\x01stratos")
    assert record.uri == store.uri_for("reports/raw.bin")
    assert record.size == 9 and record.sha256 == hashlib.sha256(b"\x00\x01stratos").hexdigest()
    assert store.get_bytes("reports/raw.bin") == b"\x00\x01stratos"
    store.put_json("reports/summary.json", {"accuracy": 0.5, "student": "nano"})
    assert store.get_json("reports/summary.json") == {"accuracy": 0.5, "student": "nano"}
    assert store.exists("reports/summary.json") and not store.exists("reports/missing.json")
    assert store.key_for(record.uri) == "reports/raw.bin"
    assert store.list("reports") == ["reports/raw.bin", "reports/summary.json"]
    with pytest.raises(ArtifactNotFoundError, match="reports/missing.json"):
        store.get_bytes("reports/missing.json")


def test_uri_forms(tmp_path: Path, s3_endpoint: str) -> None:
    local = LocalStore(tmp_path / "a")
    assert local.uri_for("x/y.json") == (tmp_path / "a" / "x" / "y.json").as_uri()
    s3 = _s3_store(s3_endpoint, prefix="team/prod/")
    assert s3.uri_for("x/y.json") == f"s3://{s3.bucket}/team/prod/x/y.json"
    with pytest.raises(ValueError, match="not inside this store"):
        s3.key_for("s3://other-bucket/team/prod/x")


def test_file_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text('{"q": "1+1", "a": "2"}\n' * 100)
    store.put_file("data/train.jsonl", src)
    out = store.get_file("data/train.jsonl", tmp_path / "out" / "train.jsonl")
    assert out.read_bytes() == src.read_bytes()
    assert store.get_file("data/train.jsonl").read_bytes() == src.read_bytes()  # default: in place / cache


def test_dir_round_trip_lists_one_key_and_replaces_stale_files(
    store: ArtifactStore, model_dir: Path, tmp_path: Path
) -> None:
    record = store.put_dir("runs/r1/model", model_dir)
    assert record.files == 4 and record.size == sum(len(b) for b in _files(model_dir).values())
    store.put_json("runs/r1/meta.json", {"ok": True})
    assert store.list("runs") == ["runs/r1/meta.json", "runs/r1/model"]
    assert store.exists("runs/r1/model") and store.is_dir("runs/r1/model")

    got = store.get_dir("runs/r1/model", tmp_path / "copy")
    assert {k: v for k, v in _files(got).items() if k != MARKER} == _files(model_dir)
    manifest = json.loads((got / MARKER).read_text())
    assert {e["path"] for e in manifest["files"]} == set(_files(model_dir))

    # Equal content gives an equal id wherever it is stored: a content key for caching.
    assert store.put_dir("runs/r2/model", model_dir).sha256 == record.sha256

    (model_dir / "model.safetensors").unlink()  # a new version without the weights file
    store.put_dir("runs/r1/model", model_dir)
    got = store.get_dir("runs/r1/model", tmp_path / "copy2")
    assert not (got / "model.safetensors").exists()
    assert "model.safetensors" not in {e["path"] for e in json.loads((got / MARKER).read_text())["files"]}


def test_s3_twenty_mib_file_goes_multipart(s3_endpoint: str, tmp_path: Path) -> None:
    store = _s3_store(s3_endpoint)
    src = tmp_path / "big"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(20 * MIB))
    store.put_dir("models/big", src)
    head = _raw(store).head_object(Bucket=store.bucket, Key="runs/models/big/weights.bin")
    # A multipart upload's ETag is "<md5 of part md5s>-<part count>": 20 MiB in 8 MiB parts = 3.
    assert head["ETag"].strip('"').endswith("-3")
    got = store.get_dir("models/big")
    assert got.is_relative_to((Path(os.environ["STRATOS_HOME"]) / "cache").resolve())
    assert (got / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    inode = (got / "weights.bin").stat().st_ino
    assert store.get_dir("models/big") == got
    assert (got / "weights.bin").stat().st_ino == inode  # unchanged remote manifest: the cache was reused


def test_local_crash_mid_put_dir_leaves_nothing_and_keeps_old_version(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "artifacts")
    store.put_dir("m/old", model_dir)
    before = _files(store.root)
    real_copy, copies_left = storage._copy_hashing, [0]

    def crashing_copy(src: Path, dest: Path) -> tuple[int, str]:
        copies_left[0] -= 1
        if copies_left[0] < 0:
            raise OSError("disk full (simulated)")
        return real_copy(src, dest)

    monkeypatch.setattr(storage, "_copy_hashing", crashing_copy)
    for key, copies_before_crash in (("m/new", 2), ("m/old", 2), ("m/file.bin", 0)):
        copies_left[0] = copies_before_crash
        with pytest.raises(OSError, match="simulated"):
            if key.endswith(".bin"):
                store.put_file(key, model_dir / "config.json")
            else:
                store.put_dir(key, model_dir)
    assert _files(store.root) == before  # no temp dirs, no temp files, the old version intact
    assert not store.exists("m/new") and not store.exists("m/file.bin")
    assert store.list("m") == ["m/old"]


def test_dir_without_marker_is_absent(store: ArtifactStore) -> None:
    # Files put there without the marker (another tool, or a crash before the marker) are not a directory.
    if isinstance(store, LocalStore):
        (store.root / "half").mkdir(parents=True)
        (store.root / "half" / "config.json").write_text("{}")
    else:
        _raw(store).put_object(Bucket=store.bucket, Key="runs/half/config.json", Body=b"{}")
    assert not store.is_dir("half") and not store.exists("half")
    with pytest.raises(ArtifactNotFoundError, match=f"'half'.*without its {MARKER}"):
        store.get_dir("half")


def test_s3_crash_mid_put_dir_hides_the_partial_upload(
    s3_endpoint: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _s3_store(s3_endpoint)
    store.put_bytes("other.txt", b"x")
    real_upload, calls = store._upload, []

    def crash_on_third_file(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise ConnectionError("worker lost (simulated)")
        real_upload(*args)

    monkeypatch.setattr(store, "_upload", crash_on_third_file)
    with pytest.raises(ConnectionError):
        store.put_dir("crashed", model_dir)
    assert _raw(store).head_object(Bucket=store.bucket, Key=f"runs/crashed/{PENDING}")
    assert not store.exists("crashed")
    assert "crashed" not in " ".join(store.list())  # its uploaded files are hidden too
    monkeypatch.setattr(store, "_upload", real_upload)
    store.put_dir("crashed", model_dir)  # a retry publishes it and clears the pending flag
    assert store.list() == ["crashed", "other.txt"]
    objects = _raw(store).list_objects_v2(Bucket=store.bucket)["Contents"]
    assert f"runs/crashed/{PENDING}" not in {o["Key"] for o in objects}


def _corrupt(store: ArtifactStore, key: str, data: bytes) -> None:
    """Overwrite a stored object's bytes but keep what the store recorded about it."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
        return
    obj = store._obj(key)
    head = _raw(store).head_object(Bucket=store.bucket, Key=obj)
    _raw(store).put_object(Bucket=store.bucket, Key=obj, Body=data, Metadata=head.get("Metadata", {}))


def test_corrupted_and_truncated_objects_are_detected(
    store: ArtifactStore, model_dir: Path, tmp_path: Path
) -> None:
    store.put_dir("m", model_dir)
    weights = (model_dir / "model.safetensors").read_bytes()
    _corrupt(store, "m/model.safetensors", bytes([weights[0] ^ 0xFF]) + weights[1:])
    with pytest.raises(StorageError, match=r"'model.safetensors' has sha256 .* \(corrupted\)") as err:
        store.get_dir("m", tmp_path / "out")
    assert store.uri_for("m") in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing half-downloaded is left at the destination

    _corrupt(store, "m/model.safetensors", weights[:1000])
    with pytest.raises(StorageError, match="has 1000 bytes but 50000 were recorded"):
        store.get_dir("m")

    store.put_bytes("single.bin", b"abcdef")
    _corrupt(store, "single.bin", b"abcdeX")
    with pytest.raises(StorageError, match="'single.bin' has sha256"):
        store.get_bytes("single.bin")


def test_from_uri_and_fetch(tmp_path: Path, s3_endpoint: str, model_dir: Path) -> None:
    local = from_uri((tmp_path / "art").as_uri())
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "art").resolve()
    assert isinstance(from_uri(str(tmp_path / "plain")), LocalStore)
    record = local.put_json("x/report.json", {"a": 1})
    assert json.loads(fetch(record.uri).read_text()) == {"a": 1}

    s3 = _s3_store(s3_endpoint)
    options = {"endpoint_url": s3_endpoint, "region": "us-east-1"}
    opened = from_uri(
        f"s3://{s3.bucket}/runs", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, **options
    )
    assert isinstance(opened, S3Store) and (opened.bucket, opened.prefix) == (s3.bucket, "runs")
    model_uri = opened.put_dir("model", model_dir).uri
    file_uri = opened.put_bytes("notes.txt", b"hello").uri
    assert fetch(file_uri, **options).read_bytes() == b"hello"  # credentials here from the AWS_* env below
    assert (fetch(model_uri, **options) / "config.json").read_bytes() == (
        model_dir / "config.json"
    ).read_bytes()

    with pytest.raises(ValueError, match="scheme 'gs'"):
        from_uri("gs://bucket/x")
    with pytest.raises(ValueError, match="names no bucket"):
        from_uri("s3:///prefix")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # fetch() without explicit keys uses boto3's chain; point it at test values, never a real profile.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/../b", "a/.hidden", "a\\b", f"m/{MARKER}", f"m/{PENDING}"]
)
def test_bad_keys_are_rejected_with_the_fix(key: str) -> None:
    with pytest.raises(ValueError, match="use a relative path like"):
        check_key(key)


def test_s3_store_hides_credentials(s3_endpoint: str) -> None:
    store = _s3_store(s3_endpoint)
    assert SECRET not in repr(store) and KEY_ID not in repr(store)
    assert SECRET not in str(vars(store)) and KEY_ID not in str(vars(store))
    broken = S3Store(
        "no-such-bucket-x",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    with pytest.raises(StorageError, match="no-such-bucket-x.*NoSuchBucket") as err:
        broken.put_bytes("k", b"v")
    assert SECRET not in str(err.value) and KEY_ID not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(ValueError, match="must be given together"):
        S3Store("b", aws_access_key_id=KEY_ID)
