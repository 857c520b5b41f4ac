"""The run's budget as the flow hands it to stages: where the ledger is, and what each next stage should cost.

The ledger itself and its rules are stratos.ledger. This module prices what the flow knows before
a stage starts: the chosen teacher's probe gives a cost per question (tokens x prices for an API
teacher, seconds x the server's rate for a local one), the pre-screen a student's seconds per
question, and the job estimate (stratos.job_cost) the first training interval. Each stage checks
the next unit of its own work against what is left and charges what it spent.
"""

from __future__ import annotations

from flows.dispatch import Dispatcher
from flows.loop import LoopOutcome
from stratos.job_cost import estimate_stage_cost
from stratos.job_profile import job_profile
from stratos.ledger import Budget
from stratos.spec import DistillSpec
from tasks.select_server import ServerChoice


def run_budget(spec: DistillSpec, choice: ServerChoice, store_uri: str, in_process: bool = True) -> Budget:
    """The budget every stage charges: one ledger per run name, GPU time at the chosen server's rate."""
    return Budget(
        store_uri=store_uri,
        name=spec.name,
        budget_usd=spec.constraints.budget_usd,
        price_per_hour=choice.row.cost_per_hour,
        server_id=choice.row.id,
        in_process=in_process,
    )


def for_dispatcher(budget: Budget, dispatcher: Dispatcher) -> Budget:
    return budget.model_copy(update={"in_process": dispatcher.in_process, "server_id": dispatcher.current})


def synthesis_per_question(loop: LoopOutcome, spec: DistillSpec) -> float:
    """The chosen teacher's probe cost per question, times the samples synthesis asks for each."""
    assert loop.teacher is not None
    score = next(s for s in loop.teacher.scores if s.name == loop.teacher.chosen)
    per_question = (score.cost_per_1k_questions or 0.0) / 1000
    return per_question * spec.strategy.num_samples


def evaluation_usd(loop: LoopOutcome, role: str, questions: int, budget: Budget) -> float:
    """An evaluation priced from what the probe (teacher) or the pre-screen (student) measured per question."""
    assert loop.teacher is not None and loop.student is not None
    if role == "teacher":
        score = next(s for s in loop.teacher.scores if s.name == loop.teacher.chosen)
        return (score.cost_per_1k_questions or 0.0) / 1000 * questions
    screened = next((p for p in loop.student.prescreen if p.name == loop.student.chosen), None)
    if screened is None or not screened.seconds:
        return 0.0
    asked = 2 * spec_prescreen_size(loop)
    return budget.gpu_usd(screened.seconds / max(asked, 1) * questions)


def spec_prescreen_size(loop: LoopOutcome) -> int:
    return loop.spec.strategy.prescreen_size


def first_interval_usd(spec: DistillSpec, choice: ServerChoice, student: str) -> float:
    """The job estimate's planned cost of the first checkpoint interval of training."""
    row = choice.row.model_dump()
    return estimate_stage_cost("training", row, job_profile(spec), student, spec.training.save_steps).planned
