"""The Prefect API a `stratos run` reports to, and the lifetime of the temporary server it starts.

With PREFECT_API_URL set, the run uses that server. Without it Prefect would start a temporary
server as a child of its own, which outlives a `stratos run` killed with SIGKILL (an orphaned
uvicorn answering /api/health, its flow runs RUNNING forever) and, sharing the terminal's
process group, dies with the first Ctrl-C while the flow still needs it. So the run starts the
same server itself (`uvicorn prefect.server.api.server:create_app`, as Prefect does), in a
session of its own so a Ctrl-C reaches only the run, through stratos.lifetime so the kernel
kills it when the run dies however it dies, and points PREFECT_API_URL at it for the run.

Flow runs carry an owner tag (host, pid and start time of the `stratos run` process); at the
next start, a `distill` run found Running or Pending whose owner is gone is marked Crashed, with
its unfinished task runs, so the UI and `prefect flow-run ls` tell the truth. Resuming needs
nothing from that: the stages' work directories and logs are where the killed run left them.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import prefect
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import TagsContext
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, get_current_settings, temporary_settings
from prefect.states import Crashed

from stratos.errors import Unreachable
from stratos.files import unlock, wait_lock
from stratos.lifetime import is_alive, process_key, tied_command
from stratos.storage import stratos_home

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 180.0  # migrations on a fresh database take ~15 s, several times that on a busy machine
RUN_TAG = "stratos"
OWNER_PREFIX = "stratos-owner:"
UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]


@contextmanager
def prefect_api() -> Iterator[str]:
    """The API URL for this run: PREFECT_API_URL, else a temporary server tied to this process."""
    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    with temporary_server() as url, api_url_set(url):
        try:
            yield url
        finally:
            drain_clients()


def drain_clients(timeout_s: float = 3.0) -> None:
    """Send the logs and events still queued in this process while the server can take them."""
    for service in (APILogWorker, EventsWorker):
        with suppress(Exception):  # best effort: never keep a stopping run waiting on it
            service.drain_all(timeout=timeout_s)


@contextmanager
def api_url_set(url: str) -> Iterator[None]:
    """PREFECT_API_URL = url in this process's settings and environment (children read the latter)."""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@contextmanager
def temporary_server() -> Iterator[str]:
    """A Prefect server on a free loopback port for the length of the block; its API URL."""
    log_path = stratos_home() / "logs" / f"prefect-server-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    # One server starts at a time per database: two runs started together would otherwise both
    # run its migrations on a fresh database at once.
    lock = Path(PREFECT_HOME.value()) / ".stratos-server-start.lock"
    starting = wait_lock(lock, "the Prefect database", then="waiting for its server to start first")
    with log_path.open("ab") as output:
        proc = subprocess.Popen(
            tied_command(_server_command(port)),
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the run, which stops this
        )
    try:
        url = f"http://127.0.0.1:{port}/api"
        try:
            _wait_healthy(proc, url, log_path)
        finally:
            unlock(starting)  # type: ignore[arg-type]  (no timeout: wait_lock returned a descriptor)
        yield url
    finally:
        _stop(proc)
    log_path.unlink(missing_ok=True)  # a clean stop: nothing in it worth keeping


def _server_command(port: int) -> list[str]:
    """Prefect's own temporary-server command (prefect.server.api.server.SubprocessASGIServer)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def _server_env() -> dict[str, str]:
    server = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env = {**os.environ, **server, **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.pop("PREFECT_API_URL", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unreachable(
                f"the temporary Prefect server exited with code {proc.returncode} before answering; "
                f"its output is in {log_path} (a damaged database under PREFECT_HOME is the usual cause)"
            )
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise Unreachable(
        f"the temporary Prefect server did not answer in {STARTUP_TIMEOUT_S:.0f} s; its output is in "
        f"{log_path}. Start one with `prefect server start` and set PREFECT_API_URL"
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s; the server is gone when this returns."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- flow runs whose process died -------------------------------------------------------------------


def owner_tags() -> list[str]:
    """Tags of this process's flow runs: which process owns them, so a later start can tell it died."""
    return [RUN_TAG, f"{OWNER_PREFIX}{socket.gethostname()}:{process_key(os.getpid())}"]


@contextmanager
def owner_tags_off_task_runs() -> Iterator[None]:
    """Task runs created in the block do not inherit the owner tags: they mark the flow run only.

    Prefect asks the server for a concurrency slot under each tag of a task run, and holds a lease on
    it while the task runs; for limits nobody set, that was about 0.1 s a task run (bench/orchestration.py).
    A caller's own tags (`with tags("gpu")` for a concurrency limit) still reach the task runs.
    """
    with TagsContext(current_tags=TagsContext.get().current_tags - set(owner_tags())):
        yield


def mark_orphans_crashed() -> list[str]:
    """Mark Crashed the `distill` runs left unfinished by a dead `stratos run` of this host; their names."""
    marked = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["distill"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED)),
                tags=FlowRunFilterTags(all_=[RUN_TAG]),
            ),
            limit=200,
        )
        for run in runs:
            owner = next((t.removeprefix(OWNER_PREFIX) for t in run.tags if t.startswith(OWNER_PREFIX)), "")
            host, _, key = owner.partition(":")
            if host != socket.gethostname() or is_alive(key):
                continue
            message = f"the stratos run process ({key.partition(':')[0]}) died without finishing this run"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
                ),
            )
            for task_run in tasks:
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            marked.append(run.name)
    if marked:
        log.info("marked %d flow run(s) of killed runs as crashed: %s", len(marked), ", ".join(marked))
    return marked
