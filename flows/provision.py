"""Where the GPU stages run, set up for the run and taken down after it: the provision stage.

Without `provision.enabled` (the default) the GPU stages go where `workers` maps the chosen
server (its work pool, or this process). With it, the flow launches the chosen server itself:

    provision   for the chosen server, then the rest of the Pareto front in fail-over order:
                the SkyPilot task pinned to the catalog row (stratos/provision/task.py), launched
                by its launcher (SkyPilot in its own venv, or the local stand-in), counted only
                once its worker polls the cluster's pool; a failed launch (no capacity, quota,
                a price above the cap) is downed and recorded, and the next server is tried
    the stages  run on that pool through the Dispatcher, as for a configured worker
    teardown    in a `finally`: on success, failure, budget stop or cancellation (Prefect raises
                TerminationSignal in the flow on a cancellation), the cluster is downed, or left
                to SkyPilot's autostop when `provision.down` is false; a stage run the downed cluster
                was still running (the parent was cancelled mid-stage) is marked cancelled; the
                cluster registry ($STRATOS_HOME/clusters, `stratos clusters`) says what happened
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled
from pydantic import BaseModel, Field

from blocks.workers import WorkTarget
from deployments.stages import deployment_name
from flows.dispatch import Dispatcher, Placement, placements, wait_for_worker
from flows.loop import LoopOutcome
from flows.stages import STAGE_FLOW
from stratos.provision.clusters import ClusterRecord, load_record, mark
from stratos.provision.launchers import LAUNCHERS, LaunchFailed, launch_and_wait, prepare, resolve_api_url
from stratos.provision.plan import launch_spot
from stratos.provision.sky import sky_bin
from stratos.provision.task import NotLaunchable, cluster_name, server_row, sky_task
from stratos.spec import DistillSpec
from tasks.select_server import ServerChoice

log = logging.getLogger(__name__)
UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


class NoServerLaunched(RuntimeError):
    """No server on the Pareto front could be launched; the message lists why each failed."""


class Provisioned(BaseModel):
    cluster: ClusterRecord
    failovers: list[str] = Field(default_factory=list, description="Servers tried first and why they failed.")


def check_provision(spec: DistillSpec) -> None:
    """Fail before the first stage, not after the constraint loop, on what no server choice can fix:
    a Prefect URL the worker cannot reach, or no SkyPilot venv."""
    if not spec.provision.enabled:
        return
    resolve_api_url(spec.provision)
    if spec.provision.backend == "skypilot":
        sky_bin()


@task(name="provision", task_run_name="provision", cache_policy=NO_CACHE)
def provision(spec: DistillSpec, choice: ServerChoice, flow_run_id: str | None) -> Provisioned:
    """Launch the chosen server (failing over along the front) and wait until its worker polls its pool."""
    settings, failovers = spec.provision, []
    for index, server in enumerate(choice.front):
        row = server_row(server.id, spec.servers.catalog_paths())
        try:
            launcher, api_url = prepare(settings, row)
        except NotLaunchable as err:
            if index == 0:  # the chosen server itself: say so before anything is launched
                raise
            failovers.append(f"provision: {server.id} skipped ({err})")
            continue
        name = cluster_name(spec.name, server.id)
        job = sky_task(
            row, settings, name, api_url, spec.name, flow_run_id=flow_run_id, use_spot=launch_spot(spec)
        )
        try:
            cluster = launch_and_wait(
                launcher,
                name,
                job,
                lambda pool, seconds: wait_for_worker(pool, seconds, spec.workers.heartbeat_timeout_s),
                settings.launch_timeout_s,
                spec.constraints.max_hourly_usd,
            )
        except LaunchFailed as err:
            failovers.append(
                f"provision: {server.id} did not launch ({err.reason}: {err}); failing over to the next Pareto server"
            )
            continue
        return Provisioned(cluster=cluster, failovers=failovers)
    raise NoServerLaunched("no server on the Pareto front could be launched:\n  " + "\n  ".join(failovers))


def teardown(spec: DistillSpec, cluster: ClusterRecord, outcome: str) -> ClusterRecord | None:
    """Down the cluster (or leave it to autostop when provision.down is false), recording why."""
    if not spec.provision.down:
        minutes = spec.provision.idle_minutes_to_autostop
        return mark(
            load_record(cluster.name) or cluster,
            "up",
            reason=f"left up ({outcome}); autostop after {minutes} idle minutes",
        )
    downed = LAUNCHERS[cluster.backend](spec.provision).down(cluster.name, reason=f"run {outcome}")
    end_stage_runs(cluster.pool, f"cluster {cluster.name} was downed (run {outcome})")
    return downed


def end_stage_runs(pool: str, why: str) -> None:
    """Cancel the stage runs a downed cluster was still running (a cancelled run leaves one behind):
    no worker is left to end them, and the UI would show them running for ever."""
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"{STAGE_FLOW}/{deployment_name(pool)}")
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))
                ),
            )
            for run in runs:
                client.set_flow_run_state(run.id, Cancelled(message=why), force=True)
    except ObjectNotFound:
        return  # no stage was dispatched to the cluster
    except Exception as err:  # noqa: BLE001 - the cluster is down already; only the UI's view is left stale
        log.warning("could not mark the stage runs of pool '%s' as ended: %s", pool, err)


@contextmanager
def stage_runner(loop: LoopOutcome) -> Iterator[Dispatcher]:
    """The Dispatcher for the GPU stages: the chosen server's pool, provisioned for the run when asked."""
    spec, choice = loop.spec, loop.selection
    assert choice is not None
    if not spec.provision.enabled:
        yield Dispatcher(placements(choice.front, spec.workers), spec.workers)
        return
    launched = provision(spec, choice, str(runtime.flow_run.id) if runtime.flow_run.id else None)
    cluster, outcome = launched.cluster, "failed"
    placement = Placement(cluster.server_id, WorkTarget(cluster.pool))
    try:
        yield Dispatcher([placement], spec.workers, list(launched.failovers), cluster.model_dump(mode="json"))
        outcome = "finished"
    except BaseException as err:  # cancellation (TerminationSignal), budget stop, any failure
        outcome = f"ended by {type(err).__name__}"
        raise
    finally:
        teardown(spec, cluster, outcome)
