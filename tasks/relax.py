"""The constraint-violation loop: when no server, teacher or student is feasible, relax and try again.

One iteration runs server selection -> teacher selection -> student fit and
pre-screen. If a stage finds nothing, the next step of the spec's relax policy
is applied (each step once, in order, each logged with the failure that
triggered it) and the loop goes back to server selection. After the last step
it stops with an infeasible report that says what every iteration tried.

The stage functions are passed in, so the same loop runs over plain functions
in tests and over Prefect tasks in the flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stratos.spec import DistillSpec, RelaxStep

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
    selection: Any = None
    teacher: Any = None
    student: Any = None

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
        if not self.feasible:
            lines.append(
                "  every relax step in the spec was tried; widen relax.steps or loosen the constraints above"
            )
        return "\n".join(lines)


def relax(
    spec: DistillSpec, step: RelaxStep, chosen_memory_gib: float | None, student_sizes: list[int]
) -> tuple[DistillSpec, str]:
    """A copy of `spec` with one constraint loosened, and a sentence saying what changed."""
    c = spec.constraints
    if step.action == "higher_budget":
        new = c.model_copy(update={"budget_usd": c.budget_usd * step.factor})
        note = f"budget ${c.budget_usd:g} -> ${new.budget_usd:g}"
    elif step.action == "higher_hourly_cap":
        if c.max_hourly_usd is None:
            return spec, "higher_hourly_cap: there is no hourly cap to raise (no change)"
        new = c.model_copy(update={"max_hourly_usd": c.max_hourly_usd * step.factor})
        note = f"hourly cap ${c.max_hourly_usd:g}/h -> ${new.max_hourly_usd:g}/h"
    elif step.action == "larger_server":
        base = max(c.min_gpu_memory_gb or 0, chosen_memory_gib or 0) or 16.0
        new = c.model_copy(update={"min_gpu_memory_gb": base * step.factor})
        note = f"minimum GPU memory {c.min_gpu_memory_gb or 0:g} -> {new.min_gpu_memory_gb:g} GiB (a larger server)"
    else:  # larger_student: admit the next candidate size above the current cap
        cap = c.max_student_params
        above = sorted(s for s in student_sizes if cap is not None and s > cap)
        if cap is None or not above:
            return spec, "larger_student: no larger student candidate to admit (no change)"
        new = c.model_copy(update={"max_student_params": above[0]})
        note = f"student size cap {cap:,} -> {above[0]:,} parameters"
    return spec.model_copy(update={"constraints": new}), f"{step.action}: {note}"


def run_constraint_loop(
    spec: DistillSpec,
    select_server: Callable[[DistillSpec], Any],
    select_teacher: Callable[[DistillSpec, Any], Any],
    select_student: Callable[[DistillSpec, Any, Any], Any],
    student_sizes: list[int],
) -> LoopOutcome:
    """Run server -> teacher -> student selection, relaxing by policy until a student is chosen or steps run out."""
    steps = list(spec.relax.steps)
    attempts: list[Attempt] = []
    relaxations: list[str] = []
    current = spec
    for iteration in range(len(steps) + 1):
        attempt = Attempt(iteration, current.constraints.model_dump(exclude_none=True))
        attempts.append(attempt)
        selection = select_server(current)
        teacher = student = None
        if not selection.feasible:
            attempt.failed_stage, attempt.why = "server", selection.reason
        else:
            attempt.server = selection.chosen
            teacher = select_teacher(current, selection)
            if teacher.chosen is None:
                attempt.failed_stage, attempt.why = "teacher", teacher.reason
            else:
                attempt.teacher = teacher.chosen
                student = select_student(current, selection, teacher)
                attempt.student = student.chosen
                if student.chosen is None:
                    attempt.failed_stage, attempt.why = "student", student.reason
                else:
                    return LoopOutcome(True, current, attempts, relaxations, selection, teacher, student)
        log.info("iteration %d failed at %s: %s", iteration, attempt.failed_stage, attempt.why)
        if iteration == len(steps):
            break
        memory = float(selection.row(selection.chosen)["total_gpu_memory_gb"]) if selection.feasible else None
        current, note = relax(current, steps[iteration], memory, student_sizes)
        relaxations.append(f"after iteration {iteration} ({attempt.failed_stage}): {note}")
        log.info("relaxing: %s", note)
    return LoopOutcome(False, current, attempts, relaxations)
