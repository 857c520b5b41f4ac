"""Build the backend a spec's model candidate describes (hf, openai or stored)."""

from __future__ import annotations

import os
from collections.abc import Callable

from pydantic import SecretStr

from stratos.backends.base import Backend
from stratos.backends.openai_http import OpenAIBackend
from stratos.backends.stored import StoredBackend
from stratos.spec import ModelCandidate


def _hf(candidate: ModelCandidate) -> Backend:
    # Imported here: torch and transformers take seconds to load and HTTP-only runs never need them.
    from stratos.backends.hf import HFBackend

    return HFBackend(candidate.model, name=candidate.name)


def _openai(candidate: ModelCandidate) -> Backend:
    key: SecretStr | None = None
    if candidate.api_key_env:
        value = os.environ.get(candidate.api_key_env)
        if not value:
            raise ValueError(
                f"model '{candidate.name}': api_key_env names the environment variable "
                f"'{candidate.api_key_env}', which is not set; export it (the key is never logged) "
                "or remove api_key_env for an endpoint without authentication"
            )
        key = SecretStr(value)
    assert candidate.base_url is not None  # ModelCandidate's validator requires it for kind 'openai'
    return OpenAIBackend(
        candidate.base_url,
        candidate.model,
        api_key=key,
        price_per_1k_input=candidate.price_per_1k_input,
        price_per_1k_output=candidate.price_per_1k_output,
        name=candidate.name,
    )


def _stored(candidate: ModelCandidate) -> Backend:
    return StoredBackend(candidate.model, name=candidate.name)


BUILDERS: dict[str, Callable[[ModelCandidate], Backend]] = {"hf": _hf, "openai": _openai, "stored": _stored}


def from_candidate(candidate: ModelCandidate) -> Backend:
    """The backend for a teacher or student candidate of the spec."""
    return BUILDERS[candidate.kind](candidate)
