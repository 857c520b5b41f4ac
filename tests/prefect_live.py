"""A real Prefect server and real process workers on loopback, for tests/test_workers.py and test_deployments.py.

`live_prefect(home)` starts `prefect server start` with its own PREFECT_HOME,
points this process at it (Prefect settings are read on import, so it uses
`temporary_settings`, as tests/test_blocks.py does) and stops every worker it
started before the server: a worker whose server has gone ignores SIGTERM.

Workers run in sessions of their own; the flow runs they start run in further
sessions of their own (Prefect isolates them), so `Worker.kill` walks the
process tree to take the worker and its flow runs down together, as losing the
machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from conftest import free_port
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(REPO / ".venv" / "bin" / "prefect")
# No telemetry, and the V1 UI when the UI is on (the V2 UI calls Amplitude whatever the settings say).
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_V2_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_UI_ENABLED": "false",
}
# Workers heartbeat and poll every 1-2 s, so a lost worker is noticed in seconds, not the default 30-90.
FAST_WORKER = {
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "OMP_NUM_THREADS": "1",
}


def _stop(proc: subprocess.Popen, sig: int, wait_s: float) -> None:
    """Signal the process group, wait, and SIGKILL whatever is left of its tree."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=wait_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Worker:
    """A `prefect worker start --type process` subprocess polling one pool."""

    pool: str
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and every flow run it started: the machine is gone."""
        _stop(self.proc, signal.SIGKILL, wait_s=10)

    def stop(self) -> None:
        """SIGINT (what a worker obeys even when its server is gone), then whatever is left is killed."""
        if self.proc.poll() is None:
            _stop(self.proc, signal.SIGINT, wait_s=20)


@dataclass
class LivePrefect:
    """A Prefect server subprocess and the workers started against it."""

    home: Path
    api_url: str
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def create_pool(self, pool: str) -> None:
        subprocess.run(
            [PREFECT, "work-pool", "create", pool, "--type", "process", "--overwrite"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_worker(self, pool: str, **env: str) -> Worker:
        """A process worker for `pool` (created if missing) with this test's STRATOS_HOME and zoo."""
        log = self.home / f"worker-{pool}-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
            env={**self.env, **FAST_WORKER, **env},
            cwd=REPO,
            start_new_session=True,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        worker = Worker(pool, proc, log)
        self.workers.append(worker)
        return worker

    def wait_for_worker(self, pool: str, timeout_s: float = 60) -> None:
        from flows.dispatch import live_workers

        deadline = time.monotonic() + timeout_s
        while not live_workers(pool, heartbeat_timeout_s=10):
            assert time.monotonic() < deadline, f"no worker of pool '{pool}' came up in {timeout_s:g}s"
            time.sleep(0.5)


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return json.loads(response.read()) is True
    except OSError:
        return False


@contextmanager
def live_prefect(home: Path, **server_env: str) -> Iterator[LivePrefect]:
    """`prefect server start` on a free loopback port, this process pointed at it, all stopped after."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url}
    log = home / "server.log"
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, **server_env},
        start_new_session=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    live = LivePrefect(home, api_url, env)
    try:
        deadline = time.monotonic() + 120  # database migrations take ~15 s on 2 busy cores
        while not _healthy(api_url):
            assert server.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"prefect server not healthy in 120 s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        with temporary_settings(updates={PREFECT_HOME: str(home), PREFECT_API_URL: api_url}):
            yield live
    finally:
        from prefect.logging.handlers import APILogWorker

        with suppress(Exception):  # nice to have; never let it keep the processes below alive
            APILogWorker.drain_all(timeout=5)  # send this process's queued run logs while the server is up
        for worker in live.workers:  # workers first: one whose server is gone hangs on SIGTERM
            with suppress(Exception):  # one stuck worker must not leave the others and the server running
                worker.stop()
        _stop(server, signal.SIGINT, wait_s=20)


def recorded_teacher(path: Path, digits: int = 1) -> Path:
    """A stored teacher (JSONL) answering every arithmetic question with the domain's own rationale."""
    from stratos.domains import get_domain
    from stratos.domains.base import completion_text
    from stratos.spec import TaskSpec

    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": digits}))
    rows = [
        {"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)}
        for split in ("train", "test")
        for ex in domain.load(split, 400, 0)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def tiny_spec(teacher: Path, **sections: Any) -> dict[str, Any]:
    """The tiny arithmetic spec (1-digit sums, nano student, deploy off); `sections` replace whole sections."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "task": {
            "domain": "arithmetic",
            "options": {"digits": 1},
            "train_size": 48,
            "probe_size": 16,
            "test_size": 24,
        },
        "constraints": {"region": "us-east", "budget_usd": 200, "max_latency_ms": 200},
        "teachers": [{"name": "recorded", "kind": "stored", "model": str(teacher)}],
        "students": [{"name": "nano", "model": "zoo:nano"}],
        "strategy": {"num_samples": 1, "max_new_tokens": 24, "prescreen_size": 8, "prescreen_demos": 1},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 3e-3},
        "serve": {"enabled": False},
    }
    return {**spec, **sections}


def flow_runs(**filters: Any) -> list[Any]:
    """Flow runs on the server, oldest first; filters: flow_name, deployment_name ('flow/name')."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        kwargs: dict[str, Any] = {"sort": FlowRunSort.START_TIME_ASC, "limit": 200}
        if "flow_name" in filters:
            kwargs["flow_filter"] = FlowFilter(name=FlowFilterName(any_=[filters["flow_name"]]))
        if "deployment_name" in filters:
            deployment = client.read_deployment_by_name(filters["deployment_name"])
            kwargs["deployment_filter"] = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        return client.read_flow_runs(**kwargs)


def task_states(flow_run_id: Any, timeout_s: float = 30.0) -> dict[str, str]:
    """Task run name -> final state name ('Completed', 'Cached', ...) of one flow run.

    The server records task-run states from the events the run emits, a moment after the run has
    moved on (CI once read the last task, the report, as 'Running' after its flow had finished), so
    this waits, up to timeout_s, until every task run it lists is final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            states = {r.name: r.state for r in runs if r.state is not None}
            if all(state.is_final() for state in states.values()) or time.monotonic() > deadline:
                return {name: state.name for name, state in states.items()}
            time.sleep(0.25)


def run_logs(flow_run_id: Any) -> list[str]:
    """The messages a flow run logged to the API (what its page in the UI shows), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def wait_final(flow_run_id: Any, timeout_s: float = 300.0) -> Any:  # tiny spec: well under a minute idle
    """The flow run once it reaches a final state (or a paused one, which waits for a person);
    polled every half second, failing after timeout_s."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and (run.state.is_final() or run.state.is_paused()):
                return run
            assert time.monotonic() < deadline, f"run {run.name} still {run.state_name} after {timeout_s:g}s"
            time.sleep(0.5)
