"""One small interface for generating text from any teacher or student.

A backend takes a batch of chat prompts and returns, per prompt, `n` sampled
completions, and keeps a running account of tokens, seconds and dollars.
Local Hugging Face models, OpenAI-compatible HTTP endpoints (OpenAI, vLLM, any
provider) and stored completions all implement it; callers never branch on
which one they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Messages = list[dict[str, str]]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # wall time of the request that produced it
    finish_reason: str = "stop"


@dataclass
class Usage:
    """Running totals across calls; `cost_usd` from the backend's configured prices."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class Backend(Protocol):
    name: str
    usage: Usage

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, `params.n` completions (outer list aligned with `prompts`)."""
        ...
