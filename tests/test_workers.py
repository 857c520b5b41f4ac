"""GPU stages on the chosen server's Prefect worker: placement, worker loss, fail-over (issue 6, acceptance 3).

Everything runs against a real `prefect server` on loopback and real process
workers (tests/prefect_live.py); the "GPU servers" are catalog servers whose
work pools those workers poll. One tiny arithmetic spec runs first in-process
(the embedded default) to fill the artifact store and the cache; each test
then changes a training setting, so data and synthesis come from the cache and
training, the stage under test, really runs on a worker.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect_live import LivePrefect, flow_runs, live_prefect, recorded_teacher, task_states, tiny_spec

from flows import run_flow
from stratos.checkpoints import last_complete_checkpoint

# A real Prefect server and process workers; the e2e tier (.ci/run runs it after the default suite): the
# default suite proves dispatch to a worker in tests/test_provision_flow.py's end-to-end run.
pytestmark = [pytest.mark.integration, pytest.mark.e2e]
POOL = "gpu-pool"


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrefect]:
    """A Prefect server, one live worker on POOL, and STRATOS_HOME shared with the workers."""
    root = tmp_path_factory.mktemp("workers")
    with pytest.MonkeyPatch.context() as mp, live_prefect(root / "prefect") as live:
        mp.setenv("STRATOS_HOME", str(root / "stratos"))
        live.env["STRATOS_HOME"] = str(root / "stratos")  # workers read and write the same store
        live.env["STRATOS_ZOO_DIR"] = os.environ["STRATOS_ZOO_DIR"]
        live.create_pool(POOL)
        live.start_worker(POOL)
        yield live


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorded_teacher(tmp_path_factory.mktemp("teacher") / "recorded.jsonl")


@pytest.fixture(scope="module")
def warm(prefect: LivePrefect, teacher: Path) -> dict[str, Any]:
    """The tiny spec run once in-process: data, selection, synthesis and the teacher's evaluation cached."""
    result = run_flow(tiny_spec(teacher))
    assert result.status == "trained"
    return tiny_spec(teacher)


def last_distill_run() -> Any:
    return flow_runs(flow_name="distill")[-1]


def state_of(states: dict[str, str], stage: str) -> str:
    """The state of the task run named `stage` (or `stage-<suffix>`: the loop numbers its iterations)."""
    names = [n for n in states if n == stage or n.startswith(f"{stage}-")]
    assert len(names) == 1, f"expected one '{stage}' task run, found {names} in {sorted(states)}"
    return states[names[0]]


def train_stage_result(result) -> dict[str, Any]:
    """What the train stage stored (stage-results/train/<key>.json), found from the model's URI."""
    key = result.artifacts["model"].split("/models/")[1].split("/")[0]
    path = Path(os.environ["STRATOS_HOME"]) / "artifacts" / "stage-results" / "train" / f"{key}.json"
    return json.loads(path.read_text())


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


def stage_runs(pool: str, stage: str) -> list[Any]:
    """The `stratos-stage` flow runs of one stage dispatched to `pool`, oldest first."""
    runs = flow_runs(deployment_name=f"stratos-stage/stage-{pool}")
    return [r for r in runs if r.parameters["stage"] == stage]


def test_training_runs_on_the_chosen_servers_worker(prefect: LivePrefect, warm: dict[str, Any]) -> None:
    spec = {
        **warm,
        "training": {**warm["training"], "learning_rate": 2e-3},
        "workers": {"pools": {"*": POOL}, "wait_s": 60, "heartbeat_timeout_s": 8},
    }
    result = run_flow(spec)

    assert result.status == "trained" and result.failovers == []
    trained = train_stage_result(result)
    assert trained["where"]["pid"] != os.getpid()  # the worker's flow-run process trained it
    assert result.choices["server"]["ran_on"] == result.choices["server"]["id"]
    assert [r.state.name for r in stage_runs(POOL, "train")] == ["Completed"]
    # ... and its model is what the student's evaluation (also on the worker) loaded.
    assert trained["model_uri"] == result.artifacts["model"]
    evaluated = [r.parameters["job"]["model"]["candidate"]["model"] for r in stage_runs(POOL, "evaluate")]
    assert _local(trained["model_uri"]) in [_local(m) for m in evaluated]
    assert result.metrics["test_size"] > 0
    states = task_states(last_distill_run().id)
    assert state_of(states, "synthesize") == "Cached" and state_of(states, "train") == "Completed"


def _kill_after_checkpoint(prefect: LivePrefect, stratos_home: Path, before: set[Path], seen: dict) -> None:
    """Kill the fault pool's worker once training has a checkpoint; start a new one once the loss is seen."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "checkpoint" not in seen:
        for run_dir in set((stratos_home / "work" / "train").glob("*")) - before:
            checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
            if checkpoint is not None:
                seen["checkpoint"] = checkpoint.name
        time.sleep(0.2)
    if "checkpoint" not in seen:
        return
    prefect.workers[-1].kill()
    seen["killed_at"] = time.monotonic()
    while time.monotonic() < deadline:  # the dispatcher marks the stage run crashed once heartbeats stop
        if any(r.state.name == "Crashed" for r in stage_runs("gpu-fault", "train")):
            break
        time.sleep(0.5)
    seen["lost_after_s"] = time.monotonic() - seen["killed_at"]
    prefect.start_worker("gpu-fault")


def test_killed_worker_training_resumes_from_checkpoint(prefect: LivePrefect, warm: dict[str, Any]) -> None:
    # 90 steps (48 examples, batch 8, 15 epochs) with a checkpoint every 5: killed in the middle.
    spec = {
        **warm,
        "training": {**warm["training"], "num_train_epochs": 15, "save_steps": 5},
        "workers": {"pools": {"*": "gpu-fault"}, "wait_s": 90, "heartbeat_timeout_s": 8},
    }
    prefect.create_pool("gpu-fault")
    prefect.start_worker("gpu-fault")
    home = Path(os.environ["STRATOS_HOME"])
    before = set((home / "work" / "train").glob("*"))
    seen: dict[str, Any] = {}
    # copy_context: the thread must see the temporary Prefect settings (API URL) this test runs under
    killer = threading.Thread(
        target=contextvars.copy_context().run,
        daemon=True,
        args=(_kill_after_checkpoint, prefect, home, before, seen),
    )
    killer.start()
    result = run_flow(spec)
    killer.join(timeout=60)

    assert "checkpoint" in seen, "training finished before any checkpoint was seen"
    assert seen["lost_after_s"] < 30  # heartbeat_timeout_s 8 + polling
    runs = stage_runs("gpu-fault", "train")
    assert [r.state.name for r in runs] == ["Crashed", "Completed"]  # the task retried on the new worker
    trained = train_stage_result(result)
    training = trained["result"]
    assert training["resumed_from_step"] >= int(seen["checkpoint"].split("-")[1]) > 0
    assert training["steps"] == 90 and result.status == "trained"
    meta = json.loads(Path(trained["meta_uri"].removeprefix("file://")).read_text())
    assert meta["result"]["resumed_from_step"] == training["resumed_from_step"]


def test_unavailable_server_fails_over_along_the_front(prefect: LivePrefect, warm: dict[str, Any]) -> None:
    from stratos.catalog import load_catalogs
    from stratos.pfg import select_server
    from stratos.spec import parse_spec

    parsed = parse_spec(warm)
    servers = load_catalogs(parsed.servers.catalog_paths())[0]
    front = select_server(servers, parsed.constraints, parsed.servers).front_ranked()
    # The chosen server's pool never gets a worker; the next one on the front has the live POOL.
    spec = {
        **warm,
        "training": {**warm["training"], "learning_rate": 1e-3},
        "workers": {"pools": {front[0]: "gpu-down", "*": POOL}, "wait_s": 3, "heartbeat_timeout_s": 8},
    }
    result = run_flow(spec)

    assert result.status == "trained"
    assert result.choices["server"]["id"] == front[0]
    assert result.choices["server"]["ran_on"] == front[1]
    assert len(result.failovers) == 1
    assert (
        front[0] in result.failovers[0] and "'gpu-down' had no live worker within 3s" in result.failovers[0]
    )
    assert front[0] in (result.report_markdown or "")  # the report says why, too
    # Nothing produced before the fail-over is produced again.
    states = task_states(last_distill_run().id)
    for stage in ("prepare-data", "select-server", "select-teacher", "choose-strategy", "synthesize"):
        assert state_of(states, stage) == "Cached", (stage, states)
    assert state_of(states, "train") == "Completed"
