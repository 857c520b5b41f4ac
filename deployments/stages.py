"""The `stratos-stage` deployments: one per work pool a GPU server's workers poll.

A dispatched stage runs as a flow run of `stratos-stage` (flows/stages.py) on the chosen
server's pool. Prefect fixes a deployment's work pool, so each pool gets its own deployment,
`stratos-stage/stage-<pool>`, registered from this checkout the first time a run dispatches to
that pool (or ahead of time with `register_stage_deployment`); later runs find it by name.
"""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from blocks.workers import WorkTarget
from flows.stages import STAGE_FLOW, stage_flow

REPO_ROOT = Path(__file__).resolve().parents[1]


def deployment_name(pool: str) -> str:
    return f"stage-{pool}"


def register_stage_deployment(target: WorkTarget) -> str:
    """`stratos-stage/stage-<pool>` for `target`, created from this checkout unless it exists; its full name."""
    name = f"{STAGE_FLOW}/{deployment_name(target.pool)}"
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return name
        except ObjectNotFound:
            pass
    stage_flow.from_source(str(REPO_ROOT), "flows/stages.py:stage_flow").deploy(
        deployment_name(target.pool),
        work_pool_name=target.pool,
        work_queue_name=target.queue,
        print_next_steps=False,
    )
    return name
