"""Stage 9, evaluate: teacher and student scored by the same harness on the same held-out split.

The harness is stratos.evaluation (greedy decoding, answers read strictly and flexibly, latency
p50/p95, tokens/s, dollars). This stage runs it for one model where the runner places it (the
chosen server's worker, or here) and publishes the full result, every completion included, as
evaluations/<key>.json; the report and the serve stage's parity check read it from there.
"""

from __future__ import annotations

from typing import ClassVar

from prefect import task
from pydantic import BaseModel, Field

from stratos.backends.base import SamplingParams
from stratos.domains import get_domain
from stratos.evaluation import evaluate
from stratos.jobs import Ran, Runner, StageJob, dispatched, transient
from stratos.ledger import Budget, spend_entry
from stratos.spec import TaskSpec
from stratos.storage import from_uri
from tasks.build_models import ResolvedModel
from tasks.prepare_data import SplitFile, load_split


class EvalJob(StageJob):
    stage: ClassVar[str] = "evaluate"

    budget: Budget | None = None
    planned_usd: float = Field(
        0.0, description="Planned cost of this evaluation, checked against the budget first."
    )
    task: TaskSpec
    model: ResolvedModel
    test: SplitFile
    max_new_tokens: int


class Evaluation(BaseModel):
    """Where the full result is, and its headline figures."""

    uri: str
    n: int
    accuracy: float  # under task.answer_match
    strict_accuracy: float
    flexible_accuracy: float
    format_warning: str | None
    where: Ran  # which machine and process ran it


def run_evaluation(job: EvalJob) -> Evaluation:
    """Greedy accuracy and latency of one model on the held-out split; published as evaluations/<key>.json."""
    ledger = job.budget.ledger() if job.budget else None
    if ledger is not None:
        ledger.check("evaluation", job.planned_usd)
    result = evaluate(
        job.model.backend(),
        get_domain(job.task),
        load_split(job.test),
        SamplingParams(max_new_tokens=job.max_new_tokens, temperature=0.0),
        match=job.task.answer_match,
    )
    stored = from_uri(job.store_uri).put_json(f"evaluations/{job.key}.json", result.to_dict())
    if ledger is not None and job.budget is not None:
        ledger.charge(
            spend_entry(
                f"evaluation:{job.key}",
                "evaluation",
                f"{job.model.name} on {result.n} questions",
                job.model.candidate.kind,
                result,
                job.budget,
            )
        )
    return Evaluation(
        uri=stored.uri,
        n=result.n,
        accuracy=result.accuracy,
        strict_accuracy=result.strict_accuracy,
        flexible_accuracy=result.flexible_accuracy,
        format_warning=result.format_warning,
        where=Ran.here(),
    )


@task(
    name="evaluate",
    task_run_name="evaluate",
    cache_policy=dispatched(run_evaluation),
    persist_result=True,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
)
def evaluate_model(job: EvalJob, runner: Runner) -> Evaluation:
    """Score one model on the held-out split where the runner places the work."""
    return runner.run(run_evaluation, job)
