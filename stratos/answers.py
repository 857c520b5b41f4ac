"""Reading a model's final answer the way evaluation harnesses do: the strict format first, then flexible rules.

Every Stratos training target ends with a line `#### <answer>` (the canonical format), so a
student distilled here writes it. Teachers and pretrained students do not: real models end with
"The answer is 18.", "**Final Answer:** 18", `\\boxed{18}` or a bare number. Scoring only the
canonical line would give such a model 0% without a word, so an answer is read by rules in order:

    rule           what it matches (case-insensitive)
    strict         a line `#### X`                          (the canonical format)
    final_answer   "Final answer: X", "final answer is X"
    answer_is      "the answer is X", "answer is: X"
    answer_colon   a line starting "Answer: X" (bold markers allowed)
    boxed          `\\boxed{X}` (nested braces allowed)
    bold           `**X**`
    fallback       the domain's own last resort: the last number (numeric domains), the tiles
                   of the last line (Mahjong); the question's own text is removed first, so a
                   model that echoes the question is not credited with a number from it

The first rule whose last match normalises to an answer wins: within one rule the last match
counts, since models restate and correct themselves before they conclude. `strict` accuracy
counts only the first rule; `flexible` accuracy counts them all. Which one drives the run's
choices is `task.answer_match` (flexible by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

STRICT = "strict"
FALLBACK = "fallback"
RULES = (STRICT, "final_answer", "answer_is", "answer_colon", "boxed", "bold", FALLBACK)
ANSWER_MARK = "####"

Normalise = Callable[[str], str | None]  # captured text -> canonical answer, None when it holds none
Fallback = Callable[[str], Iterator[tuple[str, tuple[int, int]]]]  # text -> (candidate, span) in order

# Lookaheads, so matches may overlap: in "**Final Answer:** The final answer is 18" the first
# "Final Answer" states no number, and the second, inside the same line, must still be tried.
_PATTERNS: dict[str, re.Pattern[str]] = {
    STRICT: re.compile(r"####[ \t]*(.+?)[ \t]*$", re.MULTILINE),
    "final_answer": re.compile(r"(?=final answer\W{0,4}(?:is\W{0,3})?[:：]?[ \t]*(.+?)[ \t]*$)", re.I | re.M),
    "answer_is": re.compile(r"(?=\banswer is\W{0,3}[:：]?[ \t]*(.+?)[ \t]*$)", re.I | re.M),
    "answer_colon": re.compile(r"^[ \t>*#-]*answer[ \t*]*[:：][ \t*]*(.+?)[ \t]*$", re.I | re.M),
    "bold": re.compile(r"\*\*([^*\n]+?)\*\*"),
}
_BOXED = "\\boxed{"
_TRAILING = " \t.,;:!*$`"


@dataclass(frozen=True)
class Reading:
    """The answer a completion gives, which rule found it, and where (a character span of the text)."""

    answer: str | None
    rule: str | None  # one of RULES, None when no rule found an answer
    span: tuple[int, int] | None = None

    @property
    def strict(self) -> bool:
        return self.rule == STRICT


NO_ANSWER = Reading(None, None)


def read_answer(
    text: str, normalise: Normalise, fallback: Fallback | None = None, question: str = ""
) -> Reading:
    """The first rule (in RULES order) whose last match normalises to an answer; NO_ANSWER if none does."""
    for rule in RULES:
        if rule == FALLBACK:
            if fallback is None:
                break
            found = _last(fallback(_without(text, question)), normalise)
        elif rule == "boxed":
            found = _last(_boxed(text), normalise)
        else:
            found = _last(((m.group(1), m.span(1)) for m in _PATTERNS[rule].finditer(text)), normalise)
        if found is not None:
            return Reading(found[0], rule, found[1])
    return NO_ANSWER


def read_strict(text: str, normalise: Normalise) -> str | None:
    """The canonical `#### X` answer only (the format Stratos trains)."""
    found = _last(((m.group(1), m.span(1)) for m in _PATTERNS[STRICT].finditer(text)), normalise)
    return found[0] if found else None


def _last(candidates, normalise: Normalise) -> tuple[str, tuple[int, int]] | None:
    best = None
    for raw, span in candidates:
        value = normalise(raw.strip(_TRAILING))
        if value is not None:
            best = (value, span)
    return best


def _boxed(text: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """Contents of every `\\boxed{...}`, with nested braces balanced."""
    start = text.find(_BOXED)
    while start != -1:
        begin = end = start + len(_BOXED)
        depth = 1
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth == 0:
            yield text[begin : end - 1], (begin, end - 1)
        start = text.find(_BOXED, end)


def _without(text: str, question: str) -> str:
    """`text` with every verbatim copy of the question blanked out (same length, so spans still hold)."""
    question = question.strip()
    return text.replace(question, " " * len(question)) if question else text


def last_number_candidates(text: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """Numbers in order of appearance: the fallback of numeric domains (the last one wins)."""
    for m in re.finditer(r"-?\$?\d[\d,]*(?:\.\d+)?", text):
        yield m.group(0), m.span()


def canonical_completion(text: str, reading: Reading) -> str:
    """The completion rewritten to the training format: reasoning, then one line `#### <answer>`.

    A strict completion is kept as written. Otherwise the line that states the answer ("The answer
    is 18.") is replaced by the canonical line when it is the last line; an answer found elsewhere,
    or by the fallback, keeps all the text and gets the canonical line appended.
    """
    if reading.answer is None:
        raise ValueError("canonical_completion needs a reading with an answer; this completion has none")
    if reading.strict:
        return text.strip()
    lines = text.rstrip().splitlines()
    assert reading.span is not None
    last_start = len(text.rstrip()) - len(lines[-1]) if lines else 0
    body = text.rstrip()
    if reading.rule != FALLBACK and reading.span[0] >= last_start:
        body = "\n".join(lines[:-1])
    body = body.strip()
    return f"{body}\n{ANSWER_MARK} {reading.answer}" if body else f"{ANSWER_MARK} {reading.answer}"
