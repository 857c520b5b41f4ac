"""Verifiable rewards for GRPO, from a domain: is the answer right, and is it written as '#### <answer>'.

TRL's GRPOTrainer calls each reward function with the batch's `completions`
(strings, or message lists for conversational data) and every extra dataset
column as a keyword argument -- here `gold`, the question's gold answer -- and
logs the mean of each under rewards/<function name>/mean.
"""

from __future__ import annotations

from typing import Any

from stratos.domains.base import ANSWER_MARK, Domain

# Weights in the order domain_rewards returns the functions. Correctness is what we
# want; a small format term gives a gradient before the first correct answer appears.
REWARD_WEIGHTS = {"correctness": 1.0, "format": 0.2}


def _text(completion: str | list[dict[str, str]]) -> str:
    # Conversational datasets give completions as message lists, plain ones as strings.
    return completion if isinstance(completion, str) else completion[-1]["content"]


def domain_rewards(domain: Domain) -> list:
    """GRPO reward functions (correctness, format), named so TRL logs rewards/<name>/mean."""

    def correctness(completions: list, gold: list[str], **_: Any) -> list[float]:
        return [
            float(bool(domain.score(domain.extract(_text(c)), g)))
            for c, g in zip(completions, gold, strict=True)
        ]

    def format(completions: list, **_: Any) -> list[float]:  # the name TRL logs as rewards/format
        return [float(ends_with_answer_line(_text(c))) for c in completions]

    return [correctness, format]


def ends_with_answer_line(text: str) -> bool:
    """Whether the last non-empty line is '#### <something>'."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith(ANSWER_MARK + " ") and len(lines[-1]) > len(ANSWER_MARK) + 1
