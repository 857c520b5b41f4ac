"""The `stratos-stage` flow: one GPU stage's job function, run on a worker of the chosen server.

flows/dispatch.py starts it with `run_deployment`, passing the job function by its import path
(`tasks.train:run_training`) and the job as JSON. Here the job is validated back into the type
the function declares, the function runs, and its output is written to the artifact store under
stage-results/<stage>/<job key>.json, where the parent flow reads it. The job function reads
its inputs from the store by URI and works in a local directory named by its key, so a retried
stage on the same machine resumes from its checkpoints.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, get_type_hints

from prefect import flow
from pydantic import BaseModel

import stratos  # noqa: F401  (offline environment defaults before any library import)
from stratos.jobs import StageJob
from stratos.ledger import BudgetExhausted
from stratos.progress import show_progress_in_runs
from stratos.storage import from_uri

log = logging.getLogger(__name__)

STAGE_FLOW = "stratos-stage"
BUDGET_STOP = "budget_exhausted"  # the key of a stage result that says the budget stopped it


def result_key(stage: str, key: str) -> str:
    return f"stage-results/{stage}/{key}.json"


def job_function(path: str) -> Callable[[StageJob], BaseModel]:
    """The job function `module:name`, which must be a `run_*` function of a tasks/ module."""
    module, _, name = path.partition(":")
    if not (module.startswith("tasks.") and name.startswith("run_")):
        raise ValueError(f"'{path}' is not a stage job function; expected 'tasks.<stage>:run_<name>'")
    return getattr(importlib.import_module(module), name)


def job_types(fn: Callable[..., Any]) -> tuple[type[StageJob], type[BaseModel]]:
    """The job type a job function takes and the output type it returns, from its annotations."""
    hints = get_type_hints(fn)
    return hints["job"], hints["return"]


# log_prints stays off: it turns print() into log records even when a library has swapped
# sys.stdout to capture output (dill.detect does, to read `dis` listings while `datasets` hashes
# functions), which floods the run log with bytecode and hides what the library wanted to read.
@flow(name=STAGE_FLOW)
def stage_flow(stage: str, function: str, job: dict[str, Any]) -> str:
    """Run one GPU stage's job function on this worker and store its output; returns the output's URI."""
    show_progress_in_runs()
    fn = job_function(function)
    job_type, _ = job_types(fn)
    parsed = job_type.model_validate(job)
    try:
        output = fn(parsed).model_dump(mode="json")
    except BudgetExhausted as err:  # a deliberate stop, not a failure: the parent ends the run cleanly
        output = {BUDGET_STOP: err.to_dict()}
    return from_uri(parsed.store_uri).put_json(result_key(stage, parsed.key), output).uri
