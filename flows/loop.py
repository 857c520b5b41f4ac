"""The constraint-violation loop: when no server, teacher or student is feasible, relax and try again.

One iteration runs server selection -> teacher selection -> student fit and
pre-screen. If a stage finds nothing, the next step of the spec's relax policy
is applied (each step once, in order, each logged with the failure that
triggered it; stratos.relax says what each step changes) and the loop goes back
to server selection. After the last step it stops with an infeasible report
that says what every iteration tried.

The stage functions are passed in, so the same loop runs over plain functions
in tests and over Prefect tasks in the flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stratos.relax import relax
from stratos.spec import DistillSpec, RelaxStep
from tasks.select_server import ServerChoice
from tasks.select_student import StudentChoice
from tasks.select_teacher import TeacherChoice

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """What one iteration of the loop chose, or where it stopped."""

    iteration: int
    constraints: dict[str, Any]
    server: str | None = None
    teacher: str | None = None
    student: str | None = None
    failed_stage: str | None = None
    why: str = ""


@dataclass
class LoopOutcome:
    feasible: bool
    spec: DistillSpec  # the (possibly relaxed) spec the last iteration ran with
    attempts: list[Attempt]
    relaxations: list[str] = field(default_factory=list)
    selection: ServerChoice | None = None
    teacher: TeacherChoice | None = None
    student: StudentChoice | None = None

    def report(self) -> str:
        """Plain-text account of every iteration; the infeasible report when nothing worked."""
        head = (
            "feasible"
            if self.feasible
            else "INFEASIBLE: no server/teacher/student combination meets the constraints"
        )
        lines = [head]
        for a in self.attempts:
            got = f"server={a.server} teacher={a.teacher} student={a.student}"
            lines.append(
                f"  iteration {a.iteration}: {got}"
                + (f" -> failed at {a.failed_stage}: {a.why}" if a.failed_stage else "")
            )
        for r in self.relaxations:
            lines.append(f"  relaxed: {r}")
        if not self.feasible and any(": stopped." in r for r in self.relaxations):
            lines.append(
                "  stopped at the relaxation approval (relax.approval: ui); nothing further was tried"
            )
        elif not self.feasible:
            lines.append(
                "  every relax step in the spec was tried; widen relax.steps or loosen the constraints above"
            )
        return "\n".join(lines)


@dataclass
class Approval:
    """The answer to a proposed relaxation: the step to apply, limits to change, or stop."""

    step: RelaxStep | None  # None: no step, only the edits below
    budget_usd: float | None = None
    max_student_params: int | None = None
    note: str = ""
    stop: bool = False  # end the loop here, infeasible


Approve = Callable[[DistillSpec, RelaxStep, Attempt, "LoopOutcome"], Approval]


def as_declared(spec: DistillSpec, step: RelaxStep, attempt: Attempt, sofar: LoopOutcome) -> Approval:
    """relax.approval auto: every step as the spec declares it."""
    return Approval(step)


def run_constraint_loop(
    spec: DistillSpec,
    select_server: Callable[[DistillSpec], ServerChoice],
    select_teacher: Callable[[DistillSpec, ServerChoice], TeacherChoice],
    select_student: Callable[[DistillSpec, ServerChoice, TeacherChoice], StudentChoice],
    student_sizes: list[int],
    approve: Approve = as_declared,
) -> LoopOutcome:
    """Run server -> teacher -> student selection, relaxing by policy until a student is chosen or steps run out.

    `approve` is asked before each relaxation (flows/approval.py asks a person in the Prefect UI).
    """
    steps = list(spec.relax.steps)
    outcome = LoopOutcome(False, spec, [])
    for iteration in range(len(steps) + 1):
        attempt = Attempt(iteration, outcome.spec.constraints.model_dump(exclude_none=True))
        outcome.attempts.append(attempt)
        found = _iterate(outcome.spec, attempt, select_server, select_teacher, select_student)
        outcome.selection, outcome.teacher, outcome.student = found
        if attempt.failed_stage is None:
            outcome.feasible = True
            return outcome
        log.info("iteration %d failed at %s: %s", iteration, attempt.failed_stage, attempt.why)
        if iteration == len(steps):
            break
        answer = approve(outcome.spec, steps[iteration], attempt, outcome)
        if answer.stop:
            outcome.relaxations.append(
                f"after iteration {iteration} ({attempt.failed_stage}): stopped. {answer.note}"
            )
            break
        outcome.spec, note = _apply(outcome.spec, answer, found[0], student_sizes)
        outcome.relaxations.append(f"after iteration {iteration} ({attempt.failed_stage}): {note}")
        log.info("relaxing: %s", note)
    return outcome


def _iterate(spec, attempt, select_server, select_teacher, select_student):
    """One iteration: server, then teacher, then students; the attempt records where it stopped and why."""
    selection = select_server(spec)
    if not selection.feasible:
        attempt.failed_stage, attempt.why = "server", selection.reason
        return selection, None, None
    attempt.server = selection.chosen
    teacher = select_teacher(spec, selection)
    if teacher.chosen is None:
        attempt.failed_stage, attempt.why = "teacher", teacher.reason
        return selection, teacher, None
    attempt.teacher = teacher.chosen
    student = select_student(spec, selection, teacher)
    attempt.student = student.chosen
    if student.chosen is None:
        attempt.failed_stage, attempt.why = "student", student.reason
    return selection, teacher, student


def _apply(
    spec: DistillSpec, answer: Approval, selection: ServerChoice, sizes: list[int]
) -> tuple[DistillSpec, str]:
    """The spec after the answer's edits and step, and what changed."""
    edits = {
        k: v
        for k, v in (("budget_usd", answer.budget_usd), ("max_student_params", answer.max_student_params))
        if v is not None
    }
    changed = [f"{k} set to {v:g}" for k, v in edits.items() if getattr(spec.constraints, k) != v]
    if edits:
        spec = spec.model_copy(update={"constraints": spec.constraints.model_copy(update=edits)})
    memory = selection.row.total_gpu_memory_gb if selection.feasible else None
    spec, note = relax(spec, answer.step, memory, sizes) if answer.step else (spec, "")
    return spec, "; ".join([*changed, note, answer.note] if answer.note else [*changed, note]).strip("; ")
