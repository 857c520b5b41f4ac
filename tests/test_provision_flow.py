"""The provision stage in the `distill` flow, against a real `prefect server` on loopback (issue 17).

`provision.backend: local` is the stand-in launcher: it runs the SkyPilot task's own worker job
(`python -m stratos.provision.worker`, a Prefect process worker for the cluster's pool) on this
machine, so the flow really launches a worker, dispatches the GPU stages to it and downs it.
Checked, each by PID and in the cluster registry: the GPU stages run on the launched worker and
the cluster is downed at the end; a failed launch fails over to the next server on the front; a
worker lost mid-training fails the run and still leaves no worker; a cancelled run (the flow in a
deployment's own process, cancelled through the API) downs its cluster; bad input stops before
anything is launched.

The first run fills the cache (data, selection, synthesis); later tests change a training setting
so training, the stage under test, really runs on the launched worker.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Cancelling
from prefect_live import (
    FAST_WORKER,
    QUIET,
    LivePrefect,
    flow_runs,
    live_prefect,
    recorded_teacher,
    tiny_spec,
)

from deployments.deploy import deploy
from flows import run_flow
from flows.dispatch import NoLiveWorker
from stratos.checkpoints import last_complete_checkpoint
from stratos.provision.clusters import ClusterRecord, list_records, mark
from stratos.provision.launchers import LAUNCHERS, LaunchFailed, LocalLauncher
from stratos.spec import SpecError
from stratos.storage import stratos_home

pytestmark = pytest.mark.integration  # a real Prefect server, workers and their processes

STAGES = ("synthesize", "train", "evaluate")
WORKERS = {"wait_s": 5, "heartbeat_timeout_s": 8}  # FAST_WORKER heartbeats every 2 s


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrefect]:
    """A Prefect server; the launched worker jobs inherit this process's environment (fast heartbeats)."""
    root = tmp_path_factory.mktemp("provision-flow")
    with pytest.MonkeyPatch.context() as mp, live_prefect(root / "prefect") as live:
        for key, value in {**QUIET, **FAST_WORKER, "STRATOS_HOME": str(root / "stratos")}.items():
            mp.setenv(key, value)
        live.env["STRATOS_HOME"] = str(root / "stratos")  # a deployment's worker shares the store
        live.env["STRATOS_ZOO_DIR"] = os.environ["STRATOS_ZOO_DIR"]
        try:
            yield live
        finally:
            down_everything()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorded_teacher(tmp_path_factory.mktemp("teacher") / "recorded.jsonl")


def down_everything() -> None:
    """A failed test must not leave a worker job behind."""
    for record in list_records():
        if record.status in ("launching", "up"):
            with suppress(Exception):
                LocalLauncher().down(record.name, reason="test teardown")


def provisioned(prefect: LivePrefect, teacher: Path, **sections: Any) -> dict[str, Any]:
    provision = {"enabled": True, "backend": "local", "prefect_api_url": prefect.api_url}
    return tiny_spec(teacher, provision=provision, workers=WORKERS, **sections)


def job_tree(pid: int) -> list[int]:
    """The worker job and everything under it: the watcher, the Prefect worker, its flow runs."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stage_results(since: float = 0.0) -> dict[str, list[dict[str, Any]]]:
    """What the GPU stages stored (stage-results/<stage>/<key>.json), written after `since`."""
    root = stratos_home() / "artifacts" / "stage-results"
    found: dict[str, list[dict[str, Any]]] = {}
    for path in root.glob("*/*.json"):
        if not path.name.startswith(".") and path.stat().st_mtime >= since:  # not the .meta.json sidecars
            found.setdefault(path.parent.name, []).append(json.loads(path.read_text()))
    return found


def stage_runs(pool: str) -> list[Any]:
    return flow_runs(deployment_name=f"stratos-stage/stage-{pool}")


def the_record(run_name: str) -> list[ClusterRecord]:
    return [r for r in list_records() if r.run_name == run_name]


class TreeWatcher:
    """Remembers every process of each launched worker job's tree while the run goes on."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for record in list_records():
                if record.pid and record.status == "up" and running(record.pid):
                    self.pids.update(job_tree(record.pid))
            time.sleep(0.3)

    def __enter__(self) -> TreeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------- end to end


def test_flow_provisions_runs_the_gpu_stages_there_and_downs_the_cluster(prefect, teacher):
    started = time.time()
    with TreeWatcher() as seen:
        result = run_flow(provisioned(prefect, teacher, name="prov-e2e"))

    assert result.status == "trained" and result.failovers == []
    cluster = result.cluster
    assert cluster is not None and cluster["backend"] == "local" and cluster["run_name"] == "prov-e2e"
    assert cluster["server_id"] == result.choices["server"]["id"] == result.choices["server"]["ran_on"]
    assert cluster["pool"] == cluster["name"] and cluster["launched_at"]
    # Every GPU stage ran in a flow run of the launched worker, not in this process.
    ran = stage_results(started)
    assert set(STAGES) <= set(ran), sorted(ran)
    for stage in STAGES:
        assert all(r["where"]["pid"] != os.getpid() for r in ran[stage]), (stage, ran[stage])
    pids = {r["where"]["pid"] for stage in STAGES for r in ran[stage]}
    assert pids <= seen.pids, "a stage ran outside the launched worker job's process tree"
    runs = stage_runs(cluster["pool"])
    assert {r.parameters["stage"] for r in runs} >= set(STAGES)
    assert all(r.state.name == "Completed" for r in runs)
    # Downed at the end: no process of the job's tree is left, and the registry says so.
    assert cluster["pid"] in seen.pids and not [p for p in seen.pids if running(p)]
    (record,) = the_record("prov-e2e")
    assert record.status == "down" and record.reason == "run finished" and record.ended_at
    assert f"Provisioned `{cluster['name']}` (local, {cluster['server_id']}" in result.report_markdown


# ---------------------------------------------------------------- fail-over


class NoCapacityFirst(LocalLauncher):
    """The stand-in, except that the first cluster it is asked for has no capacity (as SkyPilot reports it)."""

    refused: list[str] = []

    def launch(self, cluster: str, task: dict) -> ClusterRecord:
        if not self.refused or cluster == self.refused[0]:
            self.refused.append(cluster)
            envs = task["envs"]
            record = ClusterRecord(
                name=cluster,
                backend="local",
                run_name=envs["STRATOS_RUN"],
                server_id=envs["STRATOS_SERVER_ID"],
                pool=envs["STRATOS_POOL"],
            )
            reason = "no capacity: Failed to acquire resources in all zones"
            mark(record, "failed", reason=reason)  # what SkyLauncher records before it raises
            raise LaunchFailed("capacity", reason)
        return super().launch(cluster, task)


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_a_launch_without_capacity_fails_over_to_the_next_front_server(prefect, teacher, monkeypatch):
    monkeypatch.setitem(LAUNCHERS, "local", lambda settings: NoCapacityFirst())
    monkeypatch.setattr(NoCapacityFirst, "refused", [])
    spec = provisioned(prefect, teacher, name="prov-failover")
    spec["training"] = {**spec["training"], "learning_rate": 2e-3}  # training re-runs, synthesis is cached
    result = run_flow(spec)

    assert result.status == "trained"
    chosen = result.choices["server"]["id"]
    (refused,) = NoCapacityFirst.refused
    failed, launched = the_record("prov-failover")
    assert (failed.name, failed.server_id, failed.status) == (refused, chosen, "failed")
    assert "no capacity" in failed.reason
    # The next server on the front was launched, ran the stages and was downed.
    assert launched.server_id != chosen and result.cluster["server_id"] == launched.server_id
    assert result.choices["server"]["ran_on"] == launched.server_id
    assert launched.status == "down" and not running(launched.pid)
    runs = stage_runs(launched.pool)
    assert {"train", "evaluate"} <= {r.parameters["stage"] for r in runs}
    assert all(r.state.name == "Completed" for r in runs)
    (note,) = result.failovers
    assert chosen in note and "did not launch (capacity: no capacity" in note
    assert f"fail-over: {note}" in result.report_markdown


# ---------------------------------------------------------------- a worker lost mid-training


def after_checkpoint(run_name: str, then: Callable[[ClusterRecord], None], seen: dict[str, Any]) -> None:
    """Once the run's cluster is up and training has written a checkpoint, call `then(record)`."""
    work = stratos_home() / "work" / "train"
    before = set(work.glob("*"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        up = [r for r in the_record(run_name) if r.status == "up" and r.pid]
        fresh = set(work.glob("*")) - before
        done = [d for d in fresh if last_complete_checkpoint(d / "checkpoints") is not None]
        if up and done:
            seen["tree"] = job_tree(up[0].pid)
            seen["checkpoint"] = last_complete_checkpoint(done[0] / "checkpoints").name
            then(up[0])
            seen["at"] = time.monotonic()
            return
        time.sleep(0.3)


def in_thread(fn: Callable[..., None], *args: Any) -> threading.Thread:
    # copy_context: the thread sees the temporary Prefect settings (API URL) this test runs under
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn, *args), daemon=True)
    thread.start()
    return thread


def kill_tree(record: ClusterRecord) -> None:
    """SIGKILL the worker job and everything under it: the server is gone."""
    for pid in job_tree(record.pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


LONG_TRAINING = {"num_train_epochs": 30, "save_steps": 5}  # 180 steps: still training when stopped


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_a_worker_lost_mid_training_fails_the_run_and_leaves_no_worker(prefect, teacher):
    spec = provisioned(prefect, teacher, name="prov-crash")
    spec["training"] = {**spec["training"], **LONG_TRAINING}
    seen: dict[str, Any] = {}
    killer = in_thread(after_checkpoint, "prov-crash", kill_tree, seen)
    with pytest.raises(NoLiveWorker, match="no server on the Pareto front has a live worker"):
        run_flow(spec)
    killer.join(timeout=10)

    assert "checkpoint" in seen, "training finished before a checkpoint was seen"
    assert not [pid for pid in seen["tree"] if running(pid)]
    (record,) = the_record("prov-crash")
    assert record.status == "down" and record.ended_at is not None
    assert "NoLiveWorker" in record.reason and "already gone" in record.reason
    train_runs = [r for r in stage_runs(record.pool) if r.parameters["stage"] == "train"]
    assert [r.state.name for r in train_runs] == ["Crashed"]  # the retry found no live worker to go to


# ---------------------------------------------------------------- cancellation


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_a_cancelled_run_downs_its_cluster(prefect, teacher, tmp_path):
    spec = provisioned(prefect, teacher, name="prov-cancel")
    spec["training"] = {**spec["training"], **LONG_TRAINING, "learning_rate": 1e-3}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    # The flow must run in a process of its own for a real cancellation: a deployment on a process pool.
    deploy(tmp_path / "spec.yaml", pool="distill-pool", cron="0 0 1 1 *", name="yearly")
    prefect.start_worker("distill-pool")
    flow_run = run_deployment("distill/distill", timeout=0)
    seen: dict[str, Any] = {}

    def cancel(record: ClusterRecord) -> None:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelling(message="cancelled by the test"))

    after_checkpoint("prov-cancel", cancel, seen)
    assert "checkpoint" in seen, f"no checkpoint while the run was up: {the_record('prov-cancel')}"

    deadline = time.monotonic() + 90
    while [pid for pid in seen["tree"] if running(pid)] and time.monotonic() < deadline:
        time.sleep(0.5)
    gone_after_s = time.monotonic() - seen["at"]
    assert not [pid for pid in seen["tree"] if running(pid)], "the worker job outlived the cancellation"
    # the teardown writes the record once the worker job has exited: a moment after its PIDs are gone
    while the_record("prov-cancel")[0].status == "up" and time.monotonic() < deadline:
        time.sleep(0.2)
    (record,) = the_record("prov-cancel")
    assert record.status == "down" and "TerminationSignal" in record.reason, record
    assert gone_after_s < 60, gone_after_s  # the teardown, not the worker job's own backstop
    # The training run the downed cluster had is ended too, not left running in the UI.
    (train,) = [r for r in stage_runs(record.pool) if r.parameters["stage"] == "train"]
    assert train.state.name == "Cancelled" and "was downed" in train.state.message
    with get_client(sync_client=True) as client:
        while not client.read_flow_run(flow_run.id).state.is_final() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.read_flow_run(flow_run.id).state.name == "Cancelled"
    print(f"cancelled run: worker job gone {gone_after_s:.1f} s after the cancel")


# ---------------------------------------------------------------- bad input


SKYPILOT = {"enabled": True, "setup": "image", "image": "ghcr.io/you/stratos-gpu-worker:0.1.0"}


def test_loopback_prefect_url_with_skypilot_stops_the_flow_before_prefect(prefect, teacher):
    before = len(flow_runs(flow_name="distill"))
    spec = tiny_spec(
        teacher,
        name="prov-bad",
        provision={**SKYPILOT, "prefect_api_url": prefect.api_url},
        storage={"uri": "s3://bucket/stratos"},
    )
    with pytest.raises(SpecError, match="loopback address, which a cloud VM cannot reach"):
        run_flow(spec)
    assert len(flow_runs(flow_name="distill")) == before and the_record("prov-bad") == []


@pytest.mark.parametrize(
    ("provision", "expected"),
    [
        (
            {"prefect_api_url": "https://prefect.example.com/api"},
            r"no SkyPilot venv at .*scripts/setup-sky\.sh",
        ),
        # no provision.prefect_api_url: this process's PREFECT_API_URL, the loopback test server
        ({}, "PREFECT_API_URL = 'http://127.0.0.1:.*' is a loopback address"),
    ],
)
def test_provisioning_that_cannot_launch_stops_the_flow_before_its_first_stage(
    prefect, teacher, monkeypatch, tmp_path, provision, expected
):
    monkeypatch.setenv("STRATOS_SKY", str(tmp_path / "no-sky-venv"))
    spec = tiny_spec(
        teacher, name="prov-bad", provision={**SKYPILOT, **provision}, storage={"uri": "s3://bucket/stratos"}
    )
    before = len(flow_runs(flow_name="distill"))
    with pytest.raises(ValueError, match=expected):
        run_flow(spec)
    # checked before the flow starts: no flow run, no data prepared, the S3 store never touched
    assert len(flow_runs(flow_name="distill")) == before and the_record("prov-bad") == []
