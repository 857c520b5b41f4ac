"""A teacher model behind an OpenAI-compatible endpoint, as a Prefect Block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from stratos.backends.openai_http import OpenAIBackend


class TeacherEndpointBlock(Block):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, ...) used as a teacher, with its prices."""

    _block_type_name = "Stratos Teacher Endpoint"
    _block_type_slug = "stratos-teacher-endpoint"

    base_url: str = Field(description="Endpoint root including /v1, e.g. 'https://api.openai.com/v1'.")
    model: str = Field(description="Served model name, e.g. 'gpt-4o'.")
    price_per_1k_input: float = Field(0.0, ge=0, description="USD per 1k prompt tokens.")
    price_per_1k_output: float = Field(0.0, ge=0, description="USD per 1k completion tokens.")
    api_key: SecretStr | None = Field(None, description="API key; empty for an endpoint without auth.")

    def backend(self, name: str | None = None) -> OpenAIBackend:
        """An HTTP backend for this endpoint (the key goes into its auth header only)."""
        return OpenAIBackend(
            self.base_url,
            self.model,
            api_key=self.api_key,
            price_per_1k_input=self.price_per_1k_input,
            price_per_1k_output=self.price_per_1k_output,
            name=name or self.model,
        )
