"""Launchers: start a server's worker job and tear it down again. A dict literal picks the backend.

    SkyLauncher    SkyPilot in its own venv: `sky launch` of the task, `sky down` of the cluster
    LocalLauncher  the stand-in: runs the task's own `run` command (the worker job) on this machine

Both record every cluster in the registry (clusters.py) before launching it, and both down what a
failed launch may have left, so a launch either returns a cluster that is up or raises
LaunchFailed with nothing left running. `launch_and_wait` adds the last step the flow needs: the
cluster counts only once its worker polls the pool, and anything short of that is downed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Literal, Protocol

import psutil  # a dependency of accelerate, peft and trl, so always present with Stratos

from stratos.provision.clusters import (
    ClusterRecord,
    clusters_dir,
    list_records,
    load_record,
    mark,
    save_record,
)
from stratos.provision.sky import SkyHelperError, run_helper, sky_bin
from stratos.provision.task import ServerRow, check_launchable
from stratos.spec import ProvisionSettings, is_loopback_url

FailureReason = Literal["capacity", "quota", "price", "other"]
_QUOTA = re.compile(r"quota|limit ?exceeded|vcpulimit", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CAPACITY = re.compile(
    r"capacity|insufficient|out of stock|sold out|no (?:available )?resources", re.IGNORECASE
)


class LaunchFailed(RuntimeError):
    """A server could not be brought up; `reason` says whether the next server on the front may fare better."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def launch_failure(error_type: str, message: str) -> LaunchFailed:
    """What a SkyPilot launch error means for fail-over: quota, capacity, or something else."""
    message = _ANSI.sub("", message)  # SkyPilot colours its messages for a terminal
    if _QUOTA.search(message):
        return LaunchFailed("quota", f"quota: {message}")
    if error_type == "ResourcesUnavailableError" or _CAPACITY.search(message):
        return LaunchFailed("capacity", f"no capacity: {message}")
    return LaunchFailed("other", f"{error_type}: {message}")


class Launcher(Protocol):
    backend: str

    def launch(self, cluster: str, task: dict) -> ClusterRecord: ...

    def down(self, cluster: str, reason: str = "") -> ClusterRecord | None: ...

    def status(self) -> list[ClusterRecord]: ...


def _new_record(cluster: str, task: dict, backend: Literal["skypilot", "local"]) -> ClusterRecord:
    envs = task["envs"]
    return save_record(
        ClusterRecord(
            name=cluster,
            backend=backend,
            run_name=envs["STRATOS_RUN"],
            server_id=envs["STRATOS_SERVER_ID"],
            pool=envs["STRATOS_POOL"],
            log_path=str(clusters_dir() / f"{cluster}.log"),
        )
    )


class LocalLauncher:
    """Runs the task's worker job on this machine, against a Prefect server on loopback."""

    backend = "local"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}  # e.g. faster worker heartbeats in tests
        self._procs: dict[int, subprocess.Popen] = {}  # reaped on down: no zombies left behind

    def launch(self, cluster: str, task: dict) -> ClusterRecord:
        record = _new_record(cluster, task, "local")
        # The run command is SkyPilot's own ($STRATOS_PYTHON -m stratos.provision.worker); here it
        # runs with this interpreter, so the worker is this checkout's Prefect and Stratos.
        env = {**os.environ, **task["envs"], **self.env, "STRATOS_PYTHON": sys.executable}
        with open(record.log_path or os.devnull, "ab") as log:
            proc = subprocess.Popen(
                ["bash", "-c", task["run"]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: down() signals the job, never this process
            )
        self._procs[proc.pid] = proc
        return mark(record, "up", pid=proc.pid, region="local")

    def down(self, cluster: str, reason: str = "downed") -> ClusterRecord | None:
        record = load_record(cluster)
        if record is None:
            return None
        if record.pid and _is_worker_job(record.pid):
            _stop_job(record.pid)
        elif record.status == "up":  # the server was lost before the teardown: say so in the record
            reason = f"{reason}; its worker job was already gone"
        proc = self._procs.pop(record.pid or -1, None)
        if proc is not None:
            proc.wait(timeout=30)
        return _downed(record, reason)

    def status(self) -> list[ClusterRecord]:
        records = [r for r in list_records() if r.backend == "local"]
        for i, r in enumerate(records):
            if r.status == "up" and not (r.pid and _is_worker_job(r.pid)):
                records[i] = mark(r, "down", reason="its worker process is gone")
        return records


def _downed(record: ClusterRecord, reason: str) -> ClusterRecord:
    """Record the teardown; a failed launch keeps its status and the reason it failed."""
    return record if record.status == "failed" else mark(record, "down", reason=reason)


def _is_worker_job(pid: int) -> bool:
    """Whether pid is still a worker job (pids get reused): alive, not a zombie, running our module."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "stratos.provision.worker" in " ".join(
            proc.cmdline()
        )
    except psutil.Error:
        return False


def _stop_job(pid: int, grace_s: float = 40.0) -> None:
    """SIGINT the job (it stops its worker gracefully), then SIGKILL whatever is left of its tree."""
    try:
        tree = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while _is_worker_job(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for leftover in tree:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(leftover, signal.SIGKILL)


class SkyLauncher:
    """Launches through SkyPilot (its own venv, the user's credentials from `sky check`)."""

    backend = "skypilot"

    def __init__(self, settings: ProvisionSettings) -> None:
        sky_bin()  # fail now, before anything is launched, if the venv is missing
        self.settings = settings

    def launch(self, cluster: str, task: dict) -> ClusterRecord:
        record = _new_record(cluster, task, "skypilot")
        s = self.settings
        secrets = {"PREFECT_API_KEY": s.prefect_api_key_env} if s.prefect_api_key_env else {}
        payload = {
            "op": "launch",
            "cluster": cluster,
            "task": task,
            "secrets": secrets,
            "retry_until_up": s.retry_until_up,
            "idle_minutes_to_autostop": s.idle_minutes_to_autostop,
            "log_path": record.log_path,
        }
        try:
            answer = run_helper("cluster.py", payload, timeout=s.launch_timeout_s)
        except subprocess.TimeoutExpired:
            answer = {"ok": False, "error_type": "Timeout", "message": f"took over {s.launch_timeout_s:g}s"}
        except SkyHelperError as err:
            answer = {"ok": False, "error_type": "SkyHelperError", "message": str(err)}
        if not answer["ok"]:
            failure = launch_failure(answer["error_type"], answer["message"])
            try:
                self.down(cluster, reason="launch failed")  # a failed launch may leave half a cluster
            except (RuntimeError, SkyHelperError, subprocess.TimeoutExpired) as err:
                failure.args = (f"{failure}; the teardown failed too ({err}): run `stratos down {cluster}`",)
            mark(load_record(cluster) or record, "failed", reason=str(failure))
            raise failure
        return mark(
            record,
            "up",
            hourly_usd=answer["hourly_usd"],
            instance_type=answer["instance_type"],
            region=answer["region"],
        )

    def down(self, cluster: str, reason: str = "downed") -> ClusterRecord | None:
        answer = run_helper("cluster.py", {"op": "down", "cluster": cluster}, timeout=1800)
        if not answer["ok"]:
            raise RuntimeError(
                f"SkyPilot could not down cluster '{cluster}' ({answer['error_type']}: {answer['message']}); "
                f"run `sky down {cluster}` yourself and check `sky status`"
            )
        record = load_record(cluster)
        return _downed(record, reason) if record else None

    def status(self) -> list[ClusterRecord]:
        records = [r for r in list_records() if r.backend == "skypilot"]
        live = [r.name for r in records if r.status in ("launching", "up")]
        if not live:
            return records
        answer = run_helper("cluster.py", {"op": "status", "clusters": live}, timeout=300)
        known = answer.get("clusters", {}) if answer["ok"] else {}
        for i, r in enumerate(records):
            if r.name in live and answer["ok"] and r.name not in known:
                records[i] = mark(r, "down", reason="SkyPilot no longer lists it")
        return records


LAUNCHERS: dict[str, Callable[[ProvisionSettings], Launcher]] = {
    "skypilot": SkyLauncher,
    "local": lambda settings: LocalLauncher(),
}


def resolve_api_url(settings: ProvisionSettings) -> str:
    """The Prefect API URL the worker reports to: provision.prefect_api_url, else this process's."""
    from prefect.settings import PREFECT_API_URL  # Prefect is slow to import; `stratos clusters` skips it

    url = settings.prefect_api_url or PREFECT_API_URL.value()
    if not url:
        raise ValueError(
            "provision.prefect_api_url is empty and PREFECT_API_URL is not set: a provisioned worker needs a "
            "Prefect server to poll (the embedded temporary one takes no workers); start one and set either"
        )
    if settings.backend == "skypilot" and is_loopback_url(url):
        raise ValueError(
            f"PREFECT_API_URL = '{url}' is a loopback address, which a cloud VM cannot reach; set "
            "provision.prefect_api_url to an address the server can reach (a public or VPN host, or Prefect Cloud)"
        )
    return url


def prepare(settings: ProvisionSettings, row: ServerRow) -> tuple[Launcher, str]:
    """Every check that can fail before a launch, then (launcher, Prefect API URL for the worker)."""
    check_launchable(row, settings)
    api_url = resolve_api_url(settings)
    return LAUNCHERS[settings.backend](settings), api_url


def launch_and_wait(
    launcher: Launcher,
    cluster: str,
    task: dict,
    wait_for_worker: Callable[[str, float], bool],
    timeout_s: float,
    max_hourly_usd: float | None = None,
) -> ClusterRecord:
    """Launch, check the price, wait until the pool has a live worker; down it on any failure or interrupt.

    `wait_for_worker(pool, seconds)` is the flow's liveness check (flows.dispatch.wait_for_worker
    with its heartbeat timeout bound).
    """
    start = time.monotonic()
    record = launcher.launch(cluster, task)
    try:
        if max_hourly_usd is not None and (record.hourly_usd or 0.0) > max_hourly_usd:
            raise LaunchFailed(
                "price",
                f"SkyPilot prices {cluster} ({record.server_id}) at ${record.hourly_usd:.2f}/h, above "
                f"constraints.max_hourly_usd = {max_hourly_usd:g}; the catalog price has moved",
            )
        left = max(timeout_s - (time.monotonic() - start), 1.0)
        if not wait_for_worker(record.pool, left):
            raise LaunchFailed(
                "other",
                f"{cluster} is up but no worker polled pool '{record.pool}' within provision.launch_timeout_s = "
                f"{timeout_s:g}s; see {record.log_path}",
            )
    except BaseException as err:  # a cancelled or interrupted run must not leave the cluster up either
        launcher.down(cluster, reason=f"launch not completed: {err}")
        if isinstance(err, LaunchFailed):
            mark(load_record(cluster) or record, "failed", reason=str(err))
        raise
    return load_record(cluster) or record
