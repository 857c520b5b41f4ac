"""Each GPU stage's job, built from what the run knows: the spec, the loop's choices, earlier outputs, the budget.

A job is everything the stage reads (by value or by content-hashed URI), so it can travel to a
worker; the budget fields (where the ledger is, the planned cost of the next unit of work) are
not part of its key, so a re-run under a higher budget resumes the same work. Evaluation and
serving are called from here too, because each is one job plus how to run it: evaluation once
per model, serving only while enabled and with its cached record trusted only while the
endpoint still answers.
"""

from __future__ import annotations

from flows.dispatch import Dispatcher
from flows.loop import LoopOutcome
from flows.spend import evaluation_usd
from stratos.ledger import Budget
from stratos.spec import DistillSpec
from tasks.build_models import ResolvedModel
from tasks.evaluate import EvalJob, Evaluation, evaluate_model
from tasks.prepare_data import PreparedData
from tasks.serve import Served, ServeJob, find_running, serve
from tasks.synthesize import Mode, Synthesis, SynthesisJob
from tasks.train import TrainedStudent, TrainJob


def synthesis_job(
    spec: DistillSpec,
    teacher: ResolvedModel,
    data: PreparedData,
    mode: Mode,
    store_uri: str,
    budget: Budget | None = None,
    per_question_usd: float = 0.0,
) -> SynthesisJob:
    assert spec.task is not None
    return SynthesisJob(
        store_uri=store_uri,
        budget=budget,
        planned_usd=per_question_usd,
        task=spec.task,
        teacher=teacher,
        train=data.splits["train"],
        mode=mode,
        strategy=spec.strategy,
    )


def training_job(
    spec: DistillSpec,
    student: ResolvedModel,
    synthesis: Synthesis,
    method: str,
    store_uri: str,
    budget: Budget | None = None,
    first_interval_usd: float = 0.0,
) -> TrainJob:
    assert spec.task is not None
    return TrainJob(
        store_uri=store_uri,
        budget=budget,
        planned_usd=first_interval_usd,
        task=spec.task,
        student=student,
        synthesis_uri=synthesis.uri,
        train_sha256=synthesis.train_sha256,
        training=spec.training,
        method=method,
        seed=spec.task.seed,
    )


def evaluate_on_test(
    loop: LoopOutcome,
    model: ResolvedModel,
    data: PreparedData,
    store_uri: str,
    dispatcher: Dispatcher,
    budget: Budget | None = None,
) -> Evaluation:
    spec = loop.spec
    assert spec.task is not None
    test = data.splits["test"]
    planned = evaluation_usd(loop, model.role, test.size, budget) if budget else 0.0
    job = EvalJob(
        store_uri=store_uri,
        budget=budget,
        planned_usd=planned,
        task=spec.task,
        model=model,
        test=test,
        max_new_tokens=spec.strategy.max_new_tokens,
    )
    return evaluate_model.with_options(task_run_name=f"evaluate-{model.role}")(job, dispatcher)


def serve_if_enabled(
    spec: DistillSpec,
    trained: TrainedStudent,
    student_eval: Evaluation,
    data: PreparedData,
    store_uri: str,
    dispatcher: Dispatcher,
    budget: Budget | None = None,
) -> Served | None:
    """Serve the student; a cached endpoint record is reused only while that endpoint still answers."""
    if not spec.serve.enabled:
        return None
    assert spec.task is not None
    job = ServeJob(
        store_uri=store_uri,
        budget=budget,
        task=spec.task,
        model_uri=trained.model_uri,
        model_sha256=trained.model_sha256,
        served_model_name=spec.name,
        server_id=dispatcher.current,
        test=data.splits["test"],
        evaluation_uri=student_eval.uri,
        serve=spec.serve,
        max_new_tokens=spec.strategy.max_new_tokens,
    )
    alive = find_running(trained.model_sha256, spec.name) is not None
    return serve.with_options(refresh_cache=not alive)(job, dispatcher)
