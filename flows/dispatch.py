"""Where a GPU stage runs: in this process, or on a Prefect worker of the chosen server.

The Dispatcher is the flow's `Runner` (stratos.jobs): a dispatched task hands it a job function
and its typed job. Placement follows the Pareto front: the chosen server first, then the other
front servers in order of closeness to the ideal point. A server whose work pool
(blocks/workers.py) has no live worker within `workers.wait_s` is skipped and the reason
recorded: that is the fail-over. On a live pool the job runs as a `stratos-stage` flow run
(flows/stages.py, started with `run_deployment`) and is watched; if the worker and the run both
fall silent (no heartbeat and no log line for `workers.heartbeat_timeout_s`) the run is marked
crashed and `WorkerLost` is raised, which the Prefect task retries: the retry goes to a live
worker and resumes from the stage's checkpoints. The output comes back through the artifact store.

With no pool for the chosen server (the embedded default) the job simply runs in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Crashed
from pydantic import BaseModel

from blocks.workers import WorkerPoolBlock, WorkTarget
from deployments.stages import register_stage_deployment
from flows.stages import BUDGET_STOP, job_types, result_key
from stratos.jobs import StageJob, WorkerLost
from stratos.ledger import BudgetExhausted
from stratos.spec import WorkerSettings
from stratos.storage import from_uri
from tasks.select_server import ServerRow

log = logging.getLogger(__name__)

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
J = TypeVar("J", bound=StageJob)
Out = TypeVar("Out", bound=BaseModel)


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
    cluster: dict[str, Any] | None = None  # the server provisioning launched for this run, if any

    @property
    def in_process(self) -> bool:
        return self.placements[0].target is None

    @property
    def current(self) -> str:
        return self.placements[0].server_id

    def run(self, fn: Callable[[J], Out], job: J) -> Out:
        """Run `fn(job)` where it belongs and return its output."""
        if self.in_process:
            return fn(job)
        for index, place in enumerate(list(self.placements)):
            if place.target is None:  # a front server with no pool cannot take over from the chosen one
                self._skip(
                    f"{job.stage}: server {place.server_id} skipped (no work pool mapped to it in `workers`)"
                )
                continue
            if not wait_for_worker(
                place.target.pool, self.settings.wait_s, self.settings.heartbeat_timeout_s
            ):
                self._skip(
                    f"{job.stage}: server {place.server_id} unavailable (pool '{place.target.pool}' had no live "
                    f"worker within {self.settings.wait_s:g}s); failing over to the next Pareto server"
                )
                continue
            self.placements = self.placements[index:]  # later stages start where this one ran
            return run_remote(fn, job, place.target, self.settings)
        pools = ", ".join(str(p.target.pool) for p in self.placements if p.target)
        raise NoLiveWorker(
            f"{job.stage}: no server on the Pareto front has a live worker ({pools}); start one with "
            "`prefect worker start --pool POOL` on the server, or empty `workers` in the spec to run in-process"
        )

    def _skip(self, note: str) -> None:
        log.warning(note)
        self.failovers.append(note)


def placements(front: list[ServerRow], settings: WorkerSettings) -> list[Placement]:
    """The front in preference order (the chosen server first), each with its pool."""
    if settings.pools_block:
        block = WorkerPoolBlock.load(settings.pools_block)
    else:
        block = WorkerPoolBlock(pools=settings.pools, naming_convention=settings.naming_convention)
    return [Placement(row.id, block.lookup(row.id, row.accelerator)) for row in front]


def live_workers(pool: str, heartbeat_timeout_s: float) -> int:
    """Workers of `pool` whose last heartbeat is recent; 0 when the pool does not exist."""
    with get_client(sync_client=True) as client:
        try:
            workers = client.read_workers_for_work_pool(pool)
        except PrefectHTTPStatusError as err:  # the sync client raises this, not ObjectNotFound, on a 404
            if err.response.status_code == 404:
                return 0
            raise
    now = datetime.now(UTC)
    return sum(
        1
        for w in workers
        if w.last_heartbeat_time and (now - w.last_heartbeat_time).total_seconds() <= heartbeat_timeout_s
    )


def wait_for_worker(pool: str, wait_s: float, heartbeat_timeout_s: float) -> bool:
    """True as soon as `pool` has a live worker; False after wait_s without one."""
    deadline = time.monotonic() + wait_s
    while True:
        if live_workers(pool, heartbeat_timeout_s):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def run_remote(fn: Callable[[J], Out], job: J, target: WorkTarget, settings: WorkerSettings) -> Out:
    """Start the job on `target`'s pool, wait for it, and read its output from the artifact store."""
    name = register_stage_deployment(target)
    parameters = {
        "stage": job.stage,
        "function": f"{fn.__module__}:{fn.__name__}",
        "job": job.model_dump(mode="json"),
    }
    run = run_deployment(
        name,
        parameters=parameters,
        timeout=0,
        work_queue_name=target.queue,
        flow_run_name=f"{job.stage}-{job.key[:12]}",
    )
    log.info("%s dispatched to pool '%s' as flow run %s", job.stage, target.pool, run.id)
    state = watch(run.id, target.pool, settings)
    if state.type.value != "COMPLETED":
        raise StageFailed(f"{job.stage} on pool '{target.pool}' ended {state.type.value}: {state.message}")
    _, output_type = job_types(fn)
    output = from_uri(job.store_uri).get_json(result_key(job.stage, job.key))
    if BUDGET_STOP in output:
        raise BudgetExhausted(**output[BUDGET_STOP])
    return output_type.model_validate(output)


@dataclass
class RunVoice:
    """The newest log line a flow run has shipped, to tell a working run from a silent one."""

    flow_run_id: Any
    newest: datetime | None = None
    heard_at: float = field(default_factory=lambda: time.monotonic())  # looked up when made

    def heard(self, client: SyncPrefectClient) -> bool:
        """True when the run shipped a log line since the last look (timestamps are its own clock)."""
        logs = client.read_logs(
            LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[self.flow_run_id]),
                timestamp=LogFilterTimestamp(after_=self.newest),
            ),
            limit=1,
            sort=LogSort.TIMESTAMP_DESC,
        )
        if logs and (self.newest is None or logs[0].timestamp > self.newest):
            self.newest, self.heard_at = logs[0].timestamp, time.monotonic()
            return True
        return False

    def silent_for(self) -> float:
        return time.monotonic() - self.heard_at


def watch(flow_run_id: Any, pool: str, settings: WorkerSettings):
    """Poll the run until it ends; raise WorkerLost when the pool's workers and the run fall silent.

    Lost means both: no worker heartbeat and no log line from the run for heartbeat_timeout_s. A
    worker whose heartbeats stall while its run keeps working (a loaded machine, a slow API
    database) is not lost; a dead machine takes its runs with it, so both stop.
    """
    deadline = time.monotonic() + settings.stage_timeout_s
    voice = RunVoice(flow_run_id)
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.type.value in TERMINAL:
                return state
            voice.heard(client)
            timeout = settings.heartbeat_timeout_s
            if not live_workers(pool, timeout) and voice.silent_for() > timeout:
                message = f"worker of pool '{pool}' lost (no heartbeat and no log line from the run for {timeout:g}s)"
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                raise WorkerLost(message)
            time.sleep(1.0)
    raise WorkerLost(
        f"stage run {flow_run_id} on pool '{pool}' did not finish in {settings.stage_timeout_s:g}s"
    )
