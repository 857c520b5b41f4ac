"""Run a saved spec with a few fields changed: the parameters of a short deployment form.

A user who keeps specs in files wants a form with the spec's path and the
handful of knobs changed per run (name, budget, accuracy and latency limits,
training size and epochs, serving on or off), not the whole spec. The flow
loads the saved spec, applies the overrides and validates the result as a
whole, exactly as if the file had said so.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratos.form import field_title, form_schema
from stratos.spec import DistillSpec, parse_spec

# Where each override lands in the spec: (section, field), or (field,) for a top-level one.
_OVERRIDE_PATHS = {
    "name": ("name",),
    "budget_usd": ("constraints", "budget_usd"),
    "min_accuracy": ("constraints", "min_accuracy"),
    "max_latency_ms": ("constraints", "max_latency_ms"),
    "train_size": ("task", "train_size"),
    "num_train_epochs": ("training", "num_train_epochs"),
    "serve": ("serve", "enabled"),
}


class SpecOverrides(BaseModel):
    """The few fields a run of a saved spec may change; an empty field keeps the saved value."""

    model_config = ConfigDict(
        title="Overrides", extra="forbid", field_title_generator=field_title, json_schema_extra=form_schema
    )

    name: str | None = Field(None, description="Run name used in reports and artifact paths.")
    budget_usd: float | None = Field(None, gt=0, description="Total budget for the run, USD.")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="Minimum held-out accuracy (0-1).")
    max_latency_ms: float | None = Field(None, gt=0, description="Maximum per-request latency in ms.")
    train_size: int | None = Field(None, gt=0, description="Training questions to draw.")
    num_train_epochs: float | None = Field(None, gt=0, description="Epochs over the synthesized data.")
    serve: bool | None = Field(None, description="Serve the student at the end of the run.")

    def apply(self, spec: DistillSpec) -> DistillSpec:
        """`spec` with the set overrides, validated again as a whole (a budget below the hourly cap fails)."""
        data = spec.model_dump(exclude_unset=True)
        for field, value in self.model_dump(exclude_none=True).items():
            *sections, key = _OVERRIDE_PATHS[field]
            target = data
            for section in sections:
                target = target.setdefault(section, {})
            target[key] = value
        return parse_spec(data)
