"""The job a provisioned server runs: a Prefect worker for its pool, ended with the flow run that launched it.

    python -m stratos.provision.worker      # env: STRATOS_POOL, PREFECT_API_URL[, STRATOS_FLOW_RUN_ID]

SkyPilot counts a cluster as idle only when no job runs on it, so a worker that ran forever would
keep autodown from ever firing. This wrapper runs `prefect worker start --pool $STRATOS_POOL --type
process` and ends it (and so the job) when the flow run STRATOS_FLOW_RUN_ID is over, or when the
Prefect API has not answered for STRATOS_WATCH_GRACE_S seconds. SkyPilot then downs the idle cluster
after `provision.idle_minutes_to_autostop`: the backstop for a run that could not tear its cluster
down itself (killed, its machine lost). SIGINT or SIGTERM stops the worker the way Prefect workers
obey even when their server is gone (SIGINT), then kills whatever is left of its process tree.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

import psutil  # a dependency of accelerate, peft and trl, so always present with Stratos

log = logging.getLogger("stratos.provision.worker")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STOP_GRACE_S = 20.0


def flow_run_state(flow_run_id: str) -> str | None:
    """The flow run's state type ('RUNNING', 'COMPLETED', ...), 'DELETED' if gone, None if the API is unreachable."""
    from prefect.client.orchestration import get_client  # Prefect is heavy; only the watcher needs it
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except ObjectNotFound:
        return "DELETED"
    except PrefectHTTPStatusError as err:
        return "DELETED" if err.response.status_code == 404 else None
    except Exception:  # noqa: BLE001 - any transport failure means "not answering"; the grace period decides
        return None
    return state.type.value if state is not None else "PENDING"


def stop_tree(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT the process group, wait, then SIGKILL every process of the tree that is left."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    for pid in tree:  # flow runs the worker started live in sessions of their own
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def watch(worker: subprocess.Popen, flow_run_id: str, interval_s: float, grace_s: float, stop: list) -> str:
    """Wait until the worker exits, a signal arrives, or the flow run is over; say which."""
    last_answer = time.monotonic()
    next_check = time.monotonic() + interval_s
    while worker.poll() is None:
        if stop:
            return f"signal {stop[0]}"
        time.sleep(0.2)
        if not flow_run_id or time.monotonic() < next_check:
            continue
        next_check = time.monotonic() + interval_s
        state = flow_run_state(flow_run_id)
        if state in TERMINAL or state == "DELETED":
            return f"flow run {flow_run_id} is {state}"
        if state is not None:
            last_answer = time.monotonic()
        elif time.monotonic() - last_answer > grace_s:
            return f"the Prefect API has not answered for {grace_s:g}s"
    return f"worker exited with {worker.returncode}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s")
    pool = os.environ.get("STRATOS_POOL")
    if not pool:
        log.error("STRATOS_POOL is not set; the provisioned task sets it to the server's work pool")
        return 2
    stop: list = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop.append(signal.Signals(signum).name))
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    # Its own process group, so stop_tree's SIGINT reaches the worker and what it started, not us.
    worker = subprocess.Popen(cmd, start_new_session=True)
    why = watch(
        worker,
        os.environ.get("STRATOS_FLOW_RUN_ID", ""),
        float(os.environ.get("STRATOS_WATCH_S", "60")),
        float(os.environ.get("STRATOS_WATCH_GRACE_S", "900")),
        stop,
    )
    log.info("stopping the worker of pool '%s': %s", pool, why)
    if worker.poll() is None:
        stop_tree(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
