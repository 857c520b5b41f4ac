"""The preflight: model files, credentials, directories, endpoints and stores, checked before any work.

Real files (a zoo nano model, truncated copies), a real loopback HTTP server answering 401, a
real S3 server (moto) without the bucket, closed ports. Each check fails with the message the
user sees, and creates nothing.
"""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port

from stratos.errors import Unreachable
from stratos.preflight import (
    check_credentials,
    check_directories,
    check_endpoint,
    check_model,
    check_model_dir,
    check_store,
    preflight,
    safetensors_problem,
)
from stratos.spec import ModelCandidate, SpecError, parse_spec


def _spec(**sections):
    base = {
        "task": {"domain": "arithmetic", "options": {"digits": 1}, "train_size": 40, "probe_size": 8},
        "teachers": [{"name": "t", "kind": "stored", "model": "/nowhere.jsonl"}],
        "students": [{"name": "s", "model": "zoo:nano"}],
    }
    return parse_spec({**base, **sections})


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_a_whole_model_passes_and_its_header_alone_is_read(model_copy):
    check_model_dir("students[0] 's'", model_copy)
    assert safetensors_problem(model_copy / "model.safetensors") is None


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "is truncated: its header describes"),
        (lambda data: data[:5], "not even a header"),
        (lambda data: (10**12).to_bytes(8, "little") + data[8:], "its header claims"),
        (lambda data: data[:8] + b"{not json" + data[17:], "unreadable header"),
    ],
)
def test_a_damaged_safetensors_file_is_named_with_what_is_wrong(model_copy, damage, message):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(SpecError, match=message) as err:
        check_model_dir("teachers[0] 't'", model_copy)
    assert str(err.value).startswith("teachers[0] 't': ") and "re-save or re-download" in str(err.value)


def test_a_directory_that_is_not_a_model(tmp_path, model_copy):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="has no config.json, so it is not a saved model"):
        check_model_dir("s", empty)
    (model_copy / "config.json").write_text("{}")
    with pytest.raises(SpecError, match="no 'model_type'"):
        check_model_dir("s", model_copy)
    with pytest.raises(SpecError, match="does not exist"):
        check_model_dir("s", tmp_path / "missing")


def test_hub_ids_offline_must_be_cached_and_unknown_zoo_names_are_named(monkeypatch):
    hub = ModelCandidate(name="q", model="Qwen/Qwen2.5-0.5B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError, match="not in the local Hugging Face cache while the hub is offline"):
        check_model("students[0] 'q'", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check_model("students[0] 'q'", hub)  # online, the hub answers for itself at load time
    with pytest.raises(SpecError, match="unknown zoo model 'zoo:nanoo'; did you mean 'zoo:nano'"):
        check_model("students[0] 's'", ModelCandidate(name="s", model="zoo:nanoo"))


def test_stored_completions_that_are_not_utf8(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"question": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(SpecError, match="is not UTF-8 text"):
        check_model("teachers[0] 't'", ModelCandidate(name="t", kind="stored", model=str(path)))


def test_an_unset_api_key_variable_is_named_and_no_key_appears(monkeypatch):
    monkeypatch.delenv("STRATOS_TEST_KEY", raising=False)
    spec = _spec(
        teachers=[
            {
                "name": "api",
                "kind": "openai",
                "model": "m",
                "base_url": "http://x/v1",
                "api_key_env": "STRATOS_TEST_KEY",
            }
        ]
    )
    with pytest.raises(SpecError, match=r"teachers\[0\] 'api': api_key_env = 'STRATOS_TEST_KEY'.*not set"):
        check_credentials(spec)


class _Refusing(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(401)
        self.end_headers()


def test_endpoints_closed_or_refusing_fail_in_seconds_without_the_key(monkeypatch):
    closed = ModelCandidate(
        name="api", kind="openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    started = time.monotonic()
    with pytest.raises(
        Unreachable, match=r"does not answer \(ConnectError.*start the server or fix base_url"
    ):
        check_endpoint("teachers[0] 'api'", closed)
    assert time.monotonic() - started < 4

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STRATOS_TEST_KEY", "sk-planted-secret-123")
    refusing = ModelCandidate(
        name="api",
        kind="openai",
        model="m",
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        api_key_env="STRATOS_TEST_KEY",
    )
    try:
        with pytest.raises(
            SpecError, match=r"refused the request with HTTP 401 using \$STRATOS_TEST_KEY"
        ) as err:
            check_endpoint("teachers[0] 'api'", refusing)
    finally:
        server.shutdown()
    assert "sk-planted" not in str(err.value)


def test_directories_are_probed_without_creating_anything(tmp_path, monkeypatch):
    missing = tmp_path / "a" / "b" / "home"
    monkeypatch.setenv("STRATOS_HOME", str(missing))
    check_directories(_spec())
    assert not (tmp_path / "a").exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    monkeypatch.setenv("STRATOS_HOME", str(afile / "home"))
    with pytest.raises(SpecError, match=r"STRATOS_HOME .* cannot be a directory: .* is a file"):
        check_directories(_spec())
    monkeypatch.setenv("STRATOS_HOME", "/sys/stratos-test")
    with pytest.raises(SpecError, match="STRATOS_HOME '/sys/stratos-test' is not writable"):
        check_directories(_spec())


def test_s3_stores_unreachable_or_without_their_bucket(monkeypatch, s3_endpoint):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(Unreachable, match="does not answer .*start the S3 server or fix endpoint_url"):
        check_store(_spec(storage={"uri": "s3://bucket/prefix"}))
    assert time.monotonic() - started < 10
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    with pytest.raises(SpecError, match="the bucket does not exist: create it or fix storage.uri"):
        check_store(_spec(storage={"uri": "s3://no-such-bucket/prefix"}))


def test_catalog_contents_are_read_before_the_run(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        b"InstanceType,AcceleratorName,AcceleratorCount,Price,Region\ngpu,A100,1,1.1,us-east-1\xff\n"
    )
    with pytest.raises(SpecError, match=r"catalog '.*bad.csv' is not UTF-8 text: byte 0xff on line 2"):
        preflight(_spec(servers={"catalogs": [str(bad)]}), network=False)


def test_a_prefect_api_url_that_does_not_answer(monkeypatch):
    from stratos.preflight import check_prefect_api

    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    with pytest.raises(Unreachable, match="PREFECT_API_URL = .* does not answer .*or unset PREFECT_API_URL"):
        check_prefect_api()
    monkeypatch.delenv("PREFECT_API_URL")
    check_prefect_api()  # none set: the run starts its own
