"""Relaxation approval: the loop asks before each relax step, and the answer decides what happens next.

The browser test (tests/test_ui.py) drives the real form; here the loop's side is checked with
plain stage functions, and the paused wait applies relax.on_timeout when nobody answers.
"""

from __future__ import annotations

import pytest
from prefect import flow

from flows.approval import RelaxDecision, ask_in_ui, explain, question
from flows.loop import Approval, Attempt, LoopOutcome, run_constraint_loop
from stratos.spec import DistillSpec, RelaxStep
from tasks.select_server import ServerChoice, ServerRow
from tasks.select_student import PrescreenResult, StudentChoice, StudentFit
from tasks.select_teacher import TeacherChoice

ROW = ServerRow(
    id="lambda/gpu_1x_a10/us-east-1",
    accelerator="A10",
    gpu_count=1,
    total_gpu_memory_gb=24,
    tflops=125,
    bandwidth_gbs=600,
    cost_per_hour=0.75,
    latency_ms=12,
    hardware=125,
    job_usd=3.5,
)


def spec(**relax) -> DistillSpec:
    return DistillSpec.model_validate(
        {
            "constraints": {"budget_usd": 50, "max_student_params": 1000},
            "relax": {
                "steps": [{"action": "higher_budget", "factor": 2}, {"action": "larger_student"}],
                **relax,
            },
        }
    )


def stages(passes_when):
    """Server and teacher always found; the student passes once `passes_when(spec)` holds."""

    def server(s):
        return ServerChoice(method="pfg", chosen=ROW.id, reason="test", front=[ROW])

    def teacher(s, choice):
        return TeacherChoice("t", 0.9, [], "test")

    def student(s, choice, teacher_choice):
        ok = passes_when(s)
        screened = [PrescreenResult("nano", 500, 0.1, 0.0, passed=ok)]
        fit = [StudentFit("nano", 500, True, "fits", "full")]
        return StudentChoice(
            "nano" if ok else None, fit, screened, "test" if ok else "no student reaches 0.5"
        )

    return server, teacher, student


def test_stop_ends_the_loop_infeasible_and_says_who_stopped_it():
    asked = []

    def stop(s, step, attempt, sofar):
        asked.append(step.action)
        return Approval(None, stop=True, note="stopped from the Prefect UI")

    outcome = run_constraint_loop(spec(), *stages(lambda s: False), [500, 2000], stop)
    assert not outcome.feasible and asked == ["higher_budget"] and len(outcome.attempts) == 1
    assert "stopped at the relaxation approval" in outcome.report()


def test_an_edit_or_another_step_is_applied_and_the_loop_continues():
    def edit(s, step, attempt, sofar):  # raise the budget by hand instead of the declared step
        return Approval(None, budget_usd=500, note="limits edited")

    outcome = run_constraint_loop(
        spec(), *stages(lambda s: s.constraints.budget_usd >= 500), [500, 2000], edit
    )
    assert outcome.feasible and outcome.spec.constraints.budget_usd == 500
    assert "budget_usd set to 500" in outcome.relaxations[0]

    def other(s, step, attempt, sofar):
        return Approval(RelaxStep(action="larger_student"))

    outcome = run_constraint_loop(
        spec(), *stages(lambda s: (s.constraints.max_student_params or 0) >= 2000), [500, 2000], other
    )
    assert outcome.feasible and outcome.spec.constraints.max_student_params == 2000


def test_the_form_is_prefilled_and_explains_what_failed():
    s, step = spec(), RelaxStep(action="higher_budget", factor=2)
    attempt = Attempt(0, {}, failed_stage="student", why="no student reaches pre-screen threshold 0.5")
    sofar = LoopOutcome(False, s, [attempt], selection=stages(lambda s: False)[0](s))
    sofar.student = stages(lambda s: False)[2](s, None, None)
    form = question(s, step, attempt, sofar)
    fields = form.model_fields
    assert fields["step"].default == "higher_budget" and fields["budget_usd"].default == 50
    assert fields["budget_usd"].title == "Budget (USD)" and fields["budget_usd"].metadata  # bounds kept
    text = explain(s, step, attempt, sofar)
    assert "student pre-screen" in text and "| nano | 500 |" in text and "`higher_budget`" in text
    assert "$0.75/h" in text and "$3.50" in text
    assert issubclass(form, RelaxDecision)


def test_an_unanswered_paused_approval_applies_on_timeout():
    s = spec(approval="ui", approval_timeout_s=2, on_timeout="approve")
    step = RelaxStep(action="higher_budget", factor=2)
    attempt = Attempt(0, {}, failed_stage="student", why="none passed")

    @flow(persist_result=True)
    def waits() -> Approval:
        return ask_in_ui(s, step, attempt, LoopOutcome(False, s, [attempt]))

    answer = waits()
    assert answer.step == step and not answer.stop and "no answer within 2s" in answer.note


@pytest.mark.parametrize("stage", ["server", "teacher", None])
def test_every_failed_stage_has_a_name_in_the_question(stage):
    attempt = Attempt(0, {}, failed_stage=stage, why="x")
    assert "nothing passed at the" in explain(
        spec(), RelaxStep(action="higher_budget"), attempt, LoopOutcome(False, spec(), [attempt])
    )
