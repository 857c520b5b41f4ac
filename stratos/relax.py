"""Relaxing a spec's constraints one declared step at a time (the constraint-violation branch).

`relax` loosens one constraint of a spec by a RelaxStep and says what changed; the loop that
calls it when no server, teacher or student is feasible is flows/loop.py.
"""

from __future__ import annotations

import logging

from stratos.spec import DistillSpec, RelaxStep

log = logging.getLogger(__name__)


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
