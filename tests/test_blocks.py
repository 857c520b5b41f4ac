"""Prefect blocks: save/load through a real Prefect API, secrets kept out of reprs, logs and files.

Prefect reads PREFECT_HOME when its settings are first built (on `import prefect`),
so setting the environment variable inside a test is too late once any earlier
test module has imported prefect. What works in-process is
`prefect.settings.temporary_settings(updates={PREFECT_HOME: ...})`: the
database URL is derived from it, and the server subprocess inherits it. The
`prefect_api` fixture does that and starts the same subprocess server Prefect's
ephemeral mode starts, on a known free port, so it can be stopped afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import free_port
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from pydantic import SecretStr, ValidationError

from blocks.storage import ArtifactStoreBlock
from blocks.teacher import TeacherEndpointBlock
from blocks.workers import WorkerPoolBlock, WorkTarget
from stratos.storage import LocalStore, StorageError

REPO = Path(__file__).resolve().parents[1]
KEY_ID, SECRET, API_KEY = "AKIDPLANTEDBLOCKS001", "planted-s3-secret-7f3a9c", "sk-planted-api-key-51e0"
PLANTED = (KEY_ID, SECRET, API_KEY)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Prefect API on loopback whose database lives in a temporary PREFECT_HOME; yields that home."""
    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(updates={PREFECT_HOME: str(home)}, restore_defaults={PREFECT_API_URL}):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)  # runs the database migrations: ~10 s on 2 cores
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield home
        finally:
            server.stop()


@pytest.fixture(autouse=True)
def stratos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _s3_block(endpoint: str) -> ArtifactStoreBlock:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket=bucket)
    return ArtifactStoreBlock(
        kind="s3",
        bucket=bucket,
        prefix="stratos",
        endpoint_url=endpoint,
        region="us-east-1",
        aws_access_key_id=SecretStr(KEY_ID),
        aws_secret_access_key=SecretStr(SECRET),
    )


def _teacher() -> TeacherEndpointBlock:
    return TeacherEndpointBlock(
        base_url="http://127.0.0.1:9/v1",
        model="teacher-7b",
        price_per_1k_input=0.5,
        price_per_1k_output=1.5,
        api_key=SecretStr(API_KEY),
    )


def _fields(block: object) -> dict[str, object]:
    return {name: getattr(block, name) for name in type(block).model_fields}


@pytest.mark.integration
def test_blocks_save_and_load_through_the_api(prefect_api: Path, s3_endpoint: str) -> None:
    blocks = [
        _s3_block(s3_endpoint),
        _teacher(),
        WorkerPoolBlock(pools={"lambda/*": "gpu-lambda/high"}, naming_convention="pool-{cloud}"),
    ]
    for block in blocks:
        name = f"test-{type(block).__name__.lower()}"
        block.save(name, overwrite=True)
        loaded = type(block).load(name)
        assert _fields(loaded) == _fields(block)  # SecretStr compares by value: the secrets came back
    assert (prefect_api / "prefect.db").exists()  # the API's database is in the temporary PREFECT_HOME

    store = ArtifactStoreBlock.load("test-artifactstoreblock").store()
    store.put_json("probe.json", {"ok": 1})
    assert store.get_json("probe.json") == {"ok": 1}
    assert store.uri_for("probe.json") == f"s3://{blocks[0].bucket}/stratos/probe.json"


@pytest.mark.integration
def test_the_api_hands_out_secrets_only_when_asked(prefect_api: Path) -> None:
    from prefect.client.orchestration import get_client

    _teacher().save("teacher-secret-check", overwrite=True)
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(
            "teacher-secret-check", block_type_slug="stratos-teacher-endpoint", include_secrets=False
        )
    assert API_KEY not in json.dumps(doc.data, default=str)
    assert doc.data["model"] == "teacher-7b"


def test_secrets_are_not_in_repr_str_or_json(s3_endpoint: str) -> None:
    for block in (_s3_block(s3_endpoint), _teacher()):
        shown = repr(block) + str(block) + block.model_dump_json() + json.dumps(block.model_dump(mode="json"))
        assert not any(secret in shown for secret in PLANTED)
    assert API_KEY not in repr(_teacher().backend())


@pytest.fixture
def unpropagated_logs_captured(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Also send caplog the Prefect loggers that do not propagate to the root logger."""
    loggers = [logging.getLogger(name) for name in ("prefect.extra", "prefect._internal")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.mark.integration
def test_a_planted_secret_never_reaches_logs_records_or_stored_files(
    prefect_api: Path,
    s3_endpoint: str,
    tmp_path: Path,
    stratos_home: Path,
    caplog: pytest.LogCaptureFixture,
    unpropagated_logs_captured: None,
) -> None:
    block = _s3_block(s3_endpoint)  # creates the bucket with a bare boto3 client, before capture starts
    caplog.set_level(logging.DEBUG)  # everything, botocore's wire log included
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"layers": 2}')
    block.save("leak-check", overwrite=True)
    _teacher().save("leak-check-teacher", overwrite=True)
    store = ArtifactStoreBlock.load("leak-check").store()
    teacher = TeacherEndpointBlock.load("leak-check-teacher")
    assert teacher.api_key is not None and teacher.api_key.get_secret_value() == API_KEY
    shown = [
        repr(teacher.backend()),
        repr(store),
        repr(store.put_dir("runs/m", model)),
        repr(store.put_json("runs/r.json", {"a": 1})),
    ]
    store.get_dir("runs/m")
    shown.append(repr(store.list()))
    with pytest.raises(StorageError) as err:
        ArtifactStoreBlock(**{**_fields(block), "bucket": "missing-bucket"}).store().put_bytes("k", b"v")
    shown.append(str(err.value))

    text = caplog.text + "\n".join(shown)
    assert "runs/m" in caplog.text and "Sending http request" in caplog.text  # the logs were captured
    assert not [s for s in PLANTED if s in text]
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    for obj in client.list_objects_v2(Bucket=block.bucket)["Contents"]:
        body = client.get_object(Bucket=block.bucket, Key=obj["Key"])["Body"].read()
        assert not [s for s in PLANTED if s.encode() in body], obj["Key"]
    written = [p for p in stratos_home.rglob("*") if p.is_file()]
    assert written  # the download cache
    assert not [p for p in written if any(s.encode() in p.read_bytes() for s in PLANTED)]


def test_local_artifact_store_block(tmp_path: Path) -> None:
    store = ArtifactStoreBlock(root=str(tmp_path / "art")).store()
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "art").resolve()
    assert isinstance(ArtifactStoreBlock().store(), LocalStore)  # default root under STRATOS_HOME
    with pytest.raises(ValidationError, match="bucket is empty but kind is 's3'"):
        ArtifactStoreBlock(kind="s3")


def test_worker_pool_lookup() -> None:
    block = WorkerPoolBlock(
        pools={
            "lambda/gpu_1x_a100/us-east-1": "lambda-a100-east",
            "lambda/*": "lambda-any",
            "lambda/gpu_8x*": "lambda-big/batch",
            "*:H100*": "h100-pool",
        }
    )
    assert block.lookup("lambda/gpu_1x_a100/us-east-1", "A100") == WorkTarget("lambda-a100-east")
    assert block.lookup("lambda/gpu_8x_a100/us-west-1", "A100") == WorkTarget(
        "lambda-big", "batch"
    )  # longest
    assert block.lookup("lambda/gpu_1x_a10/us-west-1", "A10") == WorkTarget("lambda-any")
    assert block.lookup("runpod/1x_H100_SXM/US", "H100-SXM") == WorkTarget("h100-pool")
    # Unmapped: the documented convention, from slugs of the server's fields.
    assert block.lookup("cudo/epyc-a40/no-luster-1", "A40") == WorkTarget("stratos-cudo-a40")
    assert WorkerPoolBlock(naming_convention="").lookup("cudo/x/y", "A40") is None
    custom = WorkerPoolBlock(naming_convention="{cloud}-{region}-{instance_type}")
    assert custom.lookup("nebius/gpu-h100-sxm/eu-north1", "H100") == WorkTarget(
        "nebius-eu-north1-gpu-h100-sxm"
    )


def test_worker_pool_block_rejects_bad_settings() -> None:
    with pytest.raises(
        ValidationError, match=r"naming_convention 'stratos-\{gpu\}' uses an unknown placeholder"
    ):
        WorkerPoolBlock(naming_convention="stratos-{gpu}")
    with pytest.raises(ValidationError, match=r"pools\['x'\] = 'a/b/c' is not 'pool' or 'pool/queue'"):
        WorkerPoolBlock(pools={"x": "a/b/c"})


@pytest.mark.integration
def test_prefect_home_env_var_works_when_set_before_prefect_is_imported(tmp_path: Path) -> None:
    """The real default: no PREFECT_API_URL, so Prefect starts its ephemeral server under PREFECT_HOME."""
    script = (
        "from blocks.teacher import TeacherEndpointBlock as T\n"
        "T(base_url='http://127.0.0.1:9/v1', model='m-home').save('home-check')\n"
        "print('loaded', T.load('home-check').model)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert "loaded m-home" in done.stdout, done.stderr[-2000:]
    assert (tmp_path / "prefect-home" / "prefect.db").exists()
