"""The local stand-in launcher against a real `prefect server` on loopback (issue 17).

LocalLauncher runs the SkyPilot task's own `run` command, so what starts here is the job a cloud
server would run: `python -m stratos.provision.worker`, a Prefect process worker for the pool.
Checked: the pool sees a live worker after launch; down (and `stratos down RUN`) leaves no process
of the job's tree, by PID; a launch that never gets a worker, or is interrupted, is downed and
recorded; and the job ends by itself once the flow run that launched it is over (the backstop
that lets SkyPilot autodown a cluster whose run could not down it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running
from prefect_live import FAST_WORKER, QUIET, LivePrefect, live_prefect

from flows.dispatch import live_workers, wait_for_worker
from stratos.cli import main
from stratos.provision.clusters import list_records, load_record
from stratos.provision.launchers import LaunchFailed, LocalLauncher, launch_and_wait, prepare
from stratos.provision.task import cluster_name, server_row, sky_task
from stratos.spec import ProvisionSettings, ServerSettings

pytestmark = pytest.mark.integration  # a real Prefect server and launched workers
CATALOGS = ServerSettings().catalog_paths()
SERVERS = ["lambda/gpu_1x_a10/us-east-1", "runpod/1x_A40_SECURE/CA/CA-MTL-1"]
HEARTBEAT_S = 10


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrefect]:
    root = tmp_path_factory.mktemp("provision")
    with pytest.MonkeyPatch.context() as mp, live_prefect(root / "prefect") as live:
        mp.setenv("STRATOS_HOME", str(root / "stratos"))  # the cluster registry
        yield live


@pytest.fixture()
def launcher() -> Iterator[LocalLauncher]:
    launcher = LocalLauncher(env={**QUIET, **FAST_WORKER, "STRATOS_WATCH_S": "1"})
    yield launcher
    for record in list_records():  # a failed test must not leave its worker behind
        if record.status in ("launching", "up"):
            launcher.down(record.name, reason="test teardown")


def settings_for(live: LivePrefect) -> ProvisionSettings:
    return ProvisionSettings(enabled=True, backend="local", prefect_api_url=live.api_url)


def task_for(live: LivePrefect, run: str, server: str, flow_run_id: str | None = None) -> tuple[str, dict]:
    row = server_row(server, CATALOGS)
    name = cluster_name(run, server)
    task = sky_task(
        row, settings_for(live), pool=name, api_url=live.api_url, run_name=run, flow_run_id=flow_run_id
    )
    return name, task


def worker_up(pool: str, seconds: float) -> bool:
    return wait_for_worker(pool, seconds, HEARTBEAT_S)


def job_tree(pid: int) -> list[int]:
    """The job and everything under it: the watcher, the Prefect worker, the worker's flow runs."""
    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_prepare_picks_the_local_stand_in_and_accepts_its_loopback_url(prefect):
    launcher, api_url = prepare(settings_for(prefect), server_row(SERVERS[0], CATALOGS))
    assert isinstance(launcher, LocalLauncher) and api_url == prefect.api_url


def test_launch_starts_a_live_worker_and_down_leaves_no_process(prefect, launcher):
    name, task = task_for(prefect, "live", SERVERS[0])
    record = launch_and_wait(launcher, name, task, worker_up, timeout_s=120)
    assert record.status == "up" and record.pool == name and record.server_id == SERVERS[0]
    assert live_workers(name, HEARTBEAT_S) >= 1
    tree = job_tree(record.pid)
    assert len(tree) >= 2, "the job should be the watcher with the Prefect worker under it"

    downed = launcher.down(name)
    assert downed.status == "down" and downed.ended_at is not None
    assert not [pid for pid in tree if running(pid)]
    assert load_record(name).status == "down"


def test_a_launch_that_gets_no_worker_is_downed_and_recorded_failed(prefect, launcher):
    name, task = task_for(prefect, "no-worker", SERVERS[0])
    with pytest.raises(LaunchFailed) as err:
        launch_and_wait(launcher, name, task, lambda pool, seconds: False, timeout_s=5)
    assert err.value.reason == "other" and "no worker polled pool" in str(err.value)
    record = load_record(name)
    assert record.status == "failed" and "no worker polled pool" in record.reason
    assert not running(record.pid)


def test_an_interrupted_launch_is_downed(prefect, launcher):
    name, task = task_for(prefect, "interrupted", SERVERS[0])

    def cancelled(pool: str, seconds: float) -> bool:
        assert worker_up(pool, 60)  # the worker is really up when the run is cancelled
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch_and_wait(launcher, name, task, cancelled, timeout_s=120)
    record = load_record(name)
    assert record.status == "down" and not running(record.pid)


def test_stratos_down_run_tears_down_every_cluster_of_the_run(prefect, launcher, capsys):
    records = []
    for server in SERVERS:
        name, task = task_for(prefect, "two-servers", server)
        records.append(launch_and_wait(launcher, name, task, worker_up, timeout_s=120))
    trees = [job_tree(r.pid) for r in records]

    assert main(["clusters", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert all(listed[r.name]["status"] == "up" for r in records)

    assert main(["down", "two-servers"]) == 0
    assert capsys.readouterr().out.count("downed ") == 2
    for record in records:
        with suppress(ChildProcessError):
            os.waitpid(record.pid, 0)  # the job is this process's child: reap it
    assert not [pid for tree in trees for pid in tree if running(pid)]
    assert {load_record(r.name).status for r in records} == {"down"}


@flow(name="provision-backstop")
def launching_flow() -> None:
    """Stands for the distill flow run that launched a cluster."""


def test_the_worker_job_ends_when_its_flow_run_is_over(prefect, launcher):
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(launching_flow, state=Running())
    name, task = task_for(prefect, "backstop", SERVERS[0], flow_run_id=str(flow_run.id))
    record = launch_and_wait(launcher, name, task, worker_up, timeout_s=120)
    tree = job_tree(record.pid)
    time.sleep(3)  # a few watch intervals (STRATOS_WATCH_S=1) while the flow run is still running
    assert running(record.pid)

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Completed(), force=True)
    deadline = time.monotonic() + 60
    while running(record.pid) and time.monotonic() < deadline:
        launcher._procs[record.pid].poll()  # reap it as soon as it exits
        time.sleep(0.5)
    assert not [pid for pid in tree if running(pid)]
    log = Path(record.log_path).read_text()
    assert f"flow run {flow_run.id} is COMPLETED" in log
    assert launcher.down(name).status == "down"  # downing a job that already ended is harmless
