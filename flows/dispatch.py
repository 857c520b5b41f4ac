"""Running a GPU stage where it belongs: in-process, or on a Prefect worker of the chosen server.

Placement follows the Pareto front: the chosen server first, then the other
front servers in order of closeness to the ideal point. A server whose work
pool (blocks/workers.py) has no live worker within `workers.wait_s` is skipped
and the reason recorded: that is the fail-over. On a live pool the stage is
started with `run_deployment` of the `stratos-stage` flow and watched; if the
worker falls silent (no heartbeat for `workers.heartbeat_timeout_s`) the run is
marked crashed and `WorkerLost` is raised, which the Prefect task retries: the
retry goes to a live worker and resumes from the stage's checkpoints.

With no pool for the chosen server (the embedded default) the stage simply
runs in this process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocks.workers import WorkerPoolBlock, WorkTarget
from flows.stages import STAGES, result_key, stage_flow
from stratos.spec import WorkerSettings
from stratos.storage import from_uri

log = logging.getLogger(__name__)

STAGE_FLOW = "stratos-stage"
REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class WorkerLost(RuntimeError):
    """The worker running a stage stopped answering; retrying is safe (stages resume)."""


class NoLiveWorker(RuntimeError):
    """No server on the Pareto front has a live worker for its pool."""


class StageFailed(RuntimeError):
    """A dispatched stage ended in failure on its worker (a deterministic error: not retried)."""


@dataclass
class Placement:
    """A server that may run the GPU stages, and the work pool its workers poll (None: in-process)."""

    server_id: str
    target: WorkTarget | None


@dataclass
class Dispatcher:
    """Where GPU stages go; remembers fail-overs so later stages start on the server that worked."""

    placements: list[Placement]
    settings: WorkerSettings
    failovers: list[str] = field(default_factory=list)

    @property
    def in_process(self) -> bool:
        return self.placements[0].target is None

    @property
    def current(self) -> str:
        return self.placements[0].server_id

    def run(self, stage: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run `stage` with `args` where it belongs and return its result (with ran_on/failovers)."""
        if self.in_process:
            return {**STAGES[stage](**args), "ran_on": self.current, "worker": None}
        for index, place in enumerate(list(self.placements)):
            if place.target is None:  # a front server with no pool cannot take over from the chosen one
                note = f"{stage}: server {place.server_id} skipped (no work pool mapped to it in `workers`)"
                log.warning(note)
                self.failovers.append(note)
                continue
            if not wait_for_worker(
                place.target.pool, self.settings.wait_s, self.settings.heartbeat_timeout_s
            ):
                note = (f"{stage}: server {place.server_id} unavailable (pool '{place.target.pool}' had no live "
                        f"worker within {self.settings.wait_s:g}s); failing over to the next Pareto server")  # fmt: skip
                log.warning(note)
                self.failovers.append(note)
                continue
            self.placements = self.placements[index:]  # later stages start where this one ran
            result = run_remote(stage, args, place.target, self.settings)
            return {**result, "ran_on": place.server_id, "worker": place.target.pool}
        raise NoLiveWorker(
            f"{stage}: no server on the Pareto front has a live worker "
            f"({', '.join(str(p.target.pool) for p in self.placements if p.target)}); start one with "
            "`prefect worker start --pool POOL` on the server, or empty `workers` in the spec to run in-process"
        )


def placements(front: list[str], servers: Any, settings: WorkerSettings) -> list[Placement]:
    """The front in preference order, each with its pool (the chosen server must be first in `front`)."""
    block = WorkerPoolBlock.load(settings.pools_block) if settings.pools_block else WorkerPoolBlock(
        pools=settings.pools, naming_convention=settings.naming_convention
    )  # fmt: skip
    out = []
    for server_id in front:
        row = servers.loc[servers["id"] == server_id]
        accelerator = str(row["accelerator"].iloc[0]) if len(row) else ""
        out.append(Placement(server_id, block.lookup(server_id, accelerator)))
    return out


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def live_workers(pool: str, heartbeat_timeout_s: float) -> int:
    """Workers of `pool` whose last heartbeat is recent; 0 when the pool does not exist."""
    from prefect.exceptions import PrefectHTTPStatusError

    with _client() as client:
        try:
            workers = client.read_workers_for_work_pool(pool)
        except PrefectHTTPStatusError as err:  # the sync client raises this, not ObjectNotFound, on a 404
            if err.response.status_code == 404:
                return 0
            raise
    now = datetime.now(UTC)
    return sum(
        1 for w in workers
        if w.last_heartbeat_time and (now - w.last_heartbeat_time).total_seconds() <= heartbeat_timeout_s
    )  # fmt: skip


def wait_for_worker(pool: str, wait_s: float, heartbeat_timeout_s: float) -> bool:
    """True as soon as `pool` has a live worker; False after wait_s without one."""
    deadline = time.monotonic() + wait_s
    while True:
        if live_workers(pool, heartbeat_timeout_s):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def deployment_name(pool: str) -> str:
    return f"stage-{pool}"


def ensure_stage_deployment(target: WorkTarget) -> str:
    """The `stratos-stage/stage-<pool>` deployment, created from this checkout if missing."""
    from prefect.exceptions import ObjectNotFound

    name = f"{STAGE_FLOW}/{deployment_name(target.pool)}"
    with _client() as client:
        try:
            client.read_deployment_by_name(name)
            return name
        except ObjectNotFound:
            pass
    stage_flow.from_source(str(REPO_ROOT), "flows/stages.py:stage_flow").deploy(
        deployment_name(target.pool), work_pool_name=target.pool, work_queue_name=target.queue,
        print_next_steps=False,
    )  # fmt: skip
    return name


def run_remote(
    stage: str, args: dict[str, Any], target: WorkTarget, settings: WorkerSettings
) -> dict[str, Any]:
    """Start the stage on `target`'s pool, wait for it, and read its result from the artifact store."""
    from prefect.deployments import run_deployment

    name = ensure_stage_deployment(target)
    run = run_deployment(name, parameters={"stage": stage, "args": args}, timeout=0,
                         work_queue_name=target.queue, flow_run_name=f"{stage}-{args['key'][:12]}")  # fmt: skip
    log.info("%s dispatched to pool '%s' as flow run %s", stage, target.pool, run.id)
    state = watch(run.id, target.pool, settings)
    if state.type.value != "COMPLETED":
        raise StageFailed(f"{stage} on pool '{target.pool}' ended {state.type.value}: {state.message}")
    return from_uri(args["store_uri"]).get_json(result_key(stage, args["key"]))


def watch(flow_run_id: Any, pool: str, settings: WorkerSettings):
    """Poll the run until it ends; raise WorkerLost when the pool's workers fall silent meanwhile."""
    from prefect.states import Crashed

    deadline = time.monotonic() + settings.stage_timeout_s
    with _client() as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.type.value in TERMINAL:
                return state
            if not live_workers(pool, settings.heartbeat_timeout_s):
                message = f"worker of pool '{pool}' lost (no heartbeat for {settings.heartbeat_timeout_s:g}s)"
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                raise WorkerLost(message)
            time.sleep(1.0)
    raise WorkerLost(
        f"stage run {flow_run_id} on pool '{pool}' did not finish in {settings.stage_timeout_s:g}s"
    )
