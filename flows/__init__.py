"""Stratos flows: `distill` (the pipeline) and `stratos-stage` (one GPU stage on a worker).

`run_flow(spec)` is the Python entry point: a DistillSpec, a spec dict or a
path to a YAML spec in, a DistillResult out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stratos  # noqa: F401  (offline environment defaults before Prefect is imported)
from stratos.spec import DistillSpec, SpecError, load_spec, parse_spec


def run_flow(spec: DistillSpec | dict[str, Any] | str | Path):
    """Run the `distill` flow on a spec and return its DistillResult (raises on a failed run)."""
    from flows.distill import distill

    if isinstance(spec, str | Path):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    preflight(spec)
    return distill(spec)


def preflight(spec: DistillSpec) -> None:
    """What can fail in a second fails before Prefect starts: missing sections, an unreadable dataset,
    a wrong column name, an unknown scorer. One message naming the field, no traceback."""
    from flows.distill import check_runnable
    from stratos.domains import get_domain

    check_runnable(spec)
    assert spec.task is not None
    try:
        get_domain(spec.task).load("test", 1, spec.task.seed)
    except (ValueError, FileNotFoundError) as err:
        raise SpecError(str(err)) from None


__all__ = ["run_flow"]
