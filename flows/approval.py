"""Approving a relaxation from the Prefect UI (relax.approval: ui).

When no server, teacher or student passes, the loop asks before it applies the next relax step.
The question is a Prefect run input: the run's Resume form in the UI shows what failed and why
(the pre-screen table, the infeasibility report), the proposed step and what the chosen server
costs, and offers the choices: approve the proposed step or pick another, edit the budget or the
student size cap and try again, or stop with the infeasible report.

A run from a deployment is suspended while it waits (`suspend_flow_run`: its process ends, so no
worker is held; resumed, it replays its cached stages up to this question and reads the answer).
A run that must apply a default when nobody answers (`on_timeout: approve`), or one started in
this process (no deployment to resume it), waits paused instead (`pause_flow_run`, blocking),
and on the timeout applies `relax.on_timeout`. A suspended run nobody answers ends when Prefect's
timeout expires.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from prefect import get_run_logger, runtime
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model

from flows.loop import Approval, Attempt, LoopOutcome
from stratos.spec import DistillSpec, RelaxStep

Action = Literal["larger_student", "larger_server", "higher_budget", "higher_hourly_cap"]


class RelaxDecision(RunInput):
    """What to do now that this iteration found nothing feasible."""

    decision: Literal["approve", "edit", "stop"] = Field(
        "approve",
        title="Decision",
        description="approve: apply the step below; edit: keep the steps, set the budget and size cap below and "
        "try again; stop: end the run with the infeasible report.",
    )
    step: Action = Field(
        "higher_budget", title="Step to apply", description="The relaxation approve applies."
    )
    factor: float = Field(
        1.5, gt=1, title="Step factor", description="Multiplier of budget, hourly cap or memory."
    )
    budget_usd: float = Field(100.0, gt=0, title="Budget (USD)", description="The budget from here on.")
    max_student_params: int | None = Field(
        None,
        gt=0,
        title="Largest student (parameters)",
        description="The student size cap from here on; empty: none.",
    )


def question(spec: DistillSpec, step: RelaxStep, attempt: Attempt, sofar: LoopOutcome) -> type[RunInput]:
    """The form, pre-filled with the proposed step and the current limits, with the failure above it."""
    proposed = {
        "step": step.action,
        "factor": step.factor,
        "budget_usd": spec.constraints.budget_usd,
        "max_student_params": spec.constraints.max_student_params,
    }
    fields = {}
    for name, value in proposed.items():  # with_initial_data alone would drop each field's title and bounds
        info = copy.copy(RelaxDecision.model_fields[name])
        info.default = value
        fields[name] = (info.annotation, info)
    model = create_model("RelaxDecision", __base__=RelaxDecision, **fields)
    return model.with_initial_data(description=explain(spec, step, attempt, sofar))


def explain(spec: DistillSpec, step: RelaxStep, attempt: Attempt, sofar: LoopOutcome) -> str:
    """Markdown: what failed at which stage and why, the pre-screen table, the proposal and the server's cost."""
    lines = [
        f"### Iteration {attempt.iteration}: nothing passed at the {_stage_name(attempt.failed_stage)}",
        "",
        attempt.why,
        "",
    ]
    if sofar.student and sofar.student.prescreen:
        lines += ["| student | params | few-shot | zero-shot | passed |", "|---|---:|---:|---:|---|"]
        for p in sofar.student.prescreen:
            lines.append(
                f"| {p.name} | {p.params or '-'} | {p.fewshot_accuracy:.1%} | {p.zeroshot_accuracy:.1%} | "
                f"{'yes' if p.passed else 'no'} |"
            )
        lines.append("")
    lines.append(f"**Proposed step:** `{step.action}` (factor {step.factor:g}), the next of relax.steps.")
    if sofar.selection is not None and sofar.selection.feasible:
        row = sofar.selection.row
        job = f"; the planned job there costs ${row.job_usd:.2f}" if row.job_usd is not None else ""
        lines.append(f"The chosen server `{row.id}` costs ${row.cost_per_hour:.2f}/h{job}.")
    c = spec.constraints
    lines.append(f"Budget ${c.budget_usd:g}; student size cap {c.max_student_params or 'none'}.")
    return "\n".join(lines)


def _stage_name(stage: str | None) -> str:
    return {"server": "server selection", "teacher": "teacher probe", "student": "student pre-screen"}.get(
        stage or "", "selection"
    )


def ask_in_ui(spec: DistillSpec, step: RelaxStep, attempt: Attempt, sofar: LoopOutcome) -> Approval:
    """relax.approval ui: wait for the person's answer in the run's Resume form, then turn it into an Approval."""
    policy, form = spec.relax, question(spec, step, attempt, sofar)
    key, timeout = f"relax-step-{attempt.iteration}", int(policy.approval_timeout_s)
    get_run_logger().warning(
        f"waiting for a decision on the relaxation in the Prefect UI (Resume; {timeout}s)"
    )
    if runtime.deployment.id and policy.on_timeout == "stop":
        answer: Any = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    else:
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=timeout, key=key)
        except FlowPauseTimeout:
            return Approval(
                step, note=f"no answer within {timeout}s: applied the proposed step (relax.on_timeout)"
            )
    if answer.decision == "stop":
        return Approval(None, stop=True, note="stopped from the Prefect UI")
    if answer.decision == "edit":
        return Approval(
            None, answer.budget_usd, answer.max_student_params, "limits edited from the Prefect UI"
        )
    chosen = RelaxStep(action=answer.step, factor=answer.factor)
    return Approval(chosen, answer.budget_usd, answer.max_student_params, "approved from the Prefect UI")
