"""What a domain is: how to load its data, prompt for it, read an answer back, score and verify it.

Every domain speaks one text format so that teachers, students, synthesis and
scoring never special-case a task:

    prompt     chat messages [{"role": "system"|"user", "content": ...}]
    completion free-form reasoning, then a last line "#### <answer>"

A rationale for Knowledge Injection is the same completion, written by a
teacher that was shown the gold answer (`injection_messages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from stratos.answers import Reading

ANSWER_MARK = "####"
_ANSWER_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    """One question with its gold answer and, where the data has one, a reference rationale."""

    id: str
    question: str
    answer: str  # canonical gold answer text, as `format_answer` writes it
    rationale: str = ""  # reference reasoning without the final "#### answer" line
    meta: dict[str, Any] = field(default_factory=dict)


def extract_marked_answer(text: str) -> str | None:
    """The text after the last '####' line, or None when the completion has none."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def completion_text(rationale: str, answer: str) -> str:
    """The training target: reasoning, then the answer line."""
    rationale = rationale.strip()
    return f"{rationale}\n{ANSWER_MARK} {answer}" if rationale else f"{ANSWER_MARK} {answer}"


class Domain(Protocol):
    """The methods every domain implements (see gsm8k.py, mahjong.py, arithmetic.py, custom.py)."""

    name: str

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        """Examples of a split ('train' or 'test'), deterministic for a seed."""
        ...

    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat prompt asking to solve the question step by step and end with '#### answer'."""
        ...

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        """Chat prompt giving the gold answer and asking for reasoning that derives it."""
        ...

    def extract(self, completion: str) -> str | None:
        """The answer of the completion's canonical '#### answer' line, normalised for `score`, or None."""
        ...

    def read(self, completion: str, question: str = "") -> Reading:
        """The answer read the way harnesses do (stratos.answers): strict line first, then flexible rules."""
        ...

    def score(self, predicted: str | None, gold: str) -> bool:
        """Whether a predicted answer counts as correct."""
        ...

    def verify(self, example: Example, completion: str) -> bool:
        """Whether the reasoning in a completion checks out (domain verifier; True where none exists)."""
        ...
