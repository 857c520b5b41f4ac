"""Multi-digit addition and multiplication with short, regular step-by-step reasoning.

Small enough for a ~1-5M-parameter model to learn in minutes on a CPU, so the
whole pipeline can be exercised end to end. Questions look like "47+85"; the
reasoning is one line per step, every line re-checkable by the verifier:

    addition, digit by digit from the right, carry-in always written:
        7+5+0=12
        4+8+1=13
        #### 132
    multiplication, one partial product per digit of the second factor, then their sum:
        47*5=235
        47*80=3760
        235+3760=3995
        #### 3995

Options: `digits` (operand length, default 2) and `ops` (default ["+"]).
"""

from __future__ import annotations

import random
import re

from stratos.answers import Reading
from stratos.domains.base import Example, extract_marked_answer
from stratos.domains.common import (
    extract_number,
    numbers_equal,
    parse_number,
    read_number,
    split_of,
    stable_id,
)
from stratos.spec import TaskSpec

OPS = ("+", "*")
TEST_FRACTION = 0.1
SYSTEM_PROMPT = "Compute step by step. End with '#### <number>'."
_QUESTION_RE = re.compile(r"^\s*(\d+)\s*([+*])\s*(\d+)\s*$")
_ADD_STEP_RE = re.compile(r"^(\d)\+(\d)\+(\d)=(\d+)$")
_PARTIAL_RE = re.compile(r"^(\d+)\*(\d+)=(\d+)$")
_SUM_RE = re.compile(r"^(\d+(?:\+\d+)+)=(\d+)$")


def addition_steps(a: int, b: int) -> list[str]:
    """One line per digit position, least significant first: 'da+db+carry=sum'."""
    width = max(len(str(a)), len(str(b)))
    da, db = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    steps, carry = [], 0
    for x, y in zip(da, db, strict=True):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}+{carry}={total}")
        carry = total // 10
    return steps


def multiplication_steps(a: int, b: int) -> list[str]:
    """One partial product per digit of b (with its place value), then their sum when there are several."""
    digits = str(b)[::-1]
    partials = [a * int(d) * 10**i for i, d in enumerate(digits)]
    steps = [f"{a}*{int(d) * 10**i}={p}" for i, (d, p) in enumerate(zip(digits, partials, strict=True))]
    if len(partials) > 1:
        steps.append("+".join(map(str, partials)) + f"={sum(partials)}")
    return steps


def solve(question: str) -> tuple[int, str]:
    """(answer, rationale) for a question such as '47+85' or '47*85'."""
    a, op, b = parse_question(question)
    if op == "+":
        return a + b, "\n".join(addition_steps(a, b))
    return a * b, "\n".join(multiplication_steps(a, b))


def parse_question(question: str) -> tuple[int, str, int]:
    match = _QUESTION_RE.match(question)
    if match is None:
        raise ValueError(f"arithmetic question {question!r} is not of the form '47+85' or '47*85'")
    return int(match.group(1)), match.group(2), int(match.group(3))


def check_steps(question: str, completion: str) -> bool:
    """Whether every step is right arithmetic on the question's digits and leads to the answer line."""
    answer = parse_number(extract_marked_answer(completion))
    if answer is None:
        return False
    a, op, b = parse_question(question)
    lines = [ln.strip() for ln in completion.splitlines() if ln.strip() and not ln.strip().startswith("####")]
    if op == "+":
        return _check_addition(a, b, lines, answer)
    return _check_multiplication(a, b, lines, answer)


def _check_addition(a: int, b: int, lines: list[str], answer: float) -> bool:
    width = max(len(str(a)), len(str(b)))
    da, db = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    if len(lines) != width:
        return False
    carry, digits = 0, ""
    for line, x, y in zip(lines, da, db, strict=True):
        step = _ADD_STEP_RE.match(line)
        if step is None or step.group(1, 2) != (x, y) or int(step.group(3)) != carry:
            return False
        total = int(step.group(4))
        if total != int(x) + int(y) + carry:
            return False
        digits, carry = str(total % 10) + digits, total // 10
    return answer == int(f"{carry or ''}{digits}")


def _check_multiplication(a: int, b: int, lines: list[str], answer: float) -> bool:
    digits = str(b)[::-1]
    partial_lines = lines[: len(digits)]
    partials = []
    for i, (line, d) in enumerate(zip(partial_lines, digits, strict=False)):
        step = _PARTIAL_RE.match(line)
        if step is None or int(step.group(1)) != a or int(step.group(2)) != int(d) * 10**i:
            return False
        if int(step.group(3)) != a * int(d) * 10**i:
            return False
        partials.append(int(step.group(3)))
    if len(partials) != len(digits):
        return False
    if len(digits) == 1:
        return len(lines) == 1 and answer == partials[0]
    total = _SUM_RE.match(lines[-1]) if len(lines) == len(digits) + 1 else None
    if total is None or [int(p) for p in total.group(1).split("+")] != partials:
        return False
    return int(total.group(2)) == sum(partials) and answer == sum(partials)


def parse_options(options: dict) -> tuple[int, tuple[str, ...]]:
    """(digits, ops) from task.options, validated."""
    unknown = sorted(set(options) - {"digits", "ops"})
    if unknown:
        raise ValueError(f"task.options.{unknown[0]} is not an arithmetic option; use digits and ops")
    digits, ops = options.get("digits", 2), options.get("ops", ["+"])
    if not isinstance(digits, int) or not 1 <= digits <= 12:
        raise ValueError(f"task.options.digits = {digits!r}: use a whole number of digits from 1 to 12")
    if isinstance(ops, str):
        ops = [ops]
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"task.options.ops = {ops!r}: use a list drawn from {list(OPS)}, e.g. ['+']")
    return digits, tuple(ops)


class Arithmetic:
    """The arithmetic domain (see module docstring)."""

    name = "arithmetic"

    def __init__(self, task: TaskSpec) -> None:
        self.digits, self.ops = parse_options(dict(task.options))

    def capacity(self, split: str) -> int:
        """At most how many distinct questions a split can hold: operand pairs times operators.

        An upper bound (the hash split gives each split a share of them); load() draws 20 times
        the size it is asked for, so a request above this would spin through draws for nothing.
        """
        low, high = (0 if self.digits == 1 else 10 ** (self.digits - 1)), 10**self.digits - 1
        return (high - low + 1) ** 2 * len(self.ops)

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        """Distinct seeded questions of the split (fewer than `size` when the digit count allows fewer)."""
        if split not in ("train", "test"):
            raise ValueError(f"arithmetic split '{split}' does not exist; use 'train' or 'test'")
        rng = random.Random(f"arithmetic-{seed}-{split}")
        low, high = (0 if self.digits == 1 else 10 ** (self.digits - 1)), 10**self.digits - 1
        questions: dict[str, None] = {}  # ordered set: keeps the seeded order
        for _ in range(20 * size):
            if len(questions) == size:
                break
            question = f"{rng.randint(low, high)}{rng.choice(self.ops)}{rng.randint(low, high)}"
            if split_of(f"arithmetic:{question}", TEST_FRACTION) == split:
                questions[question] = None
        return [self._example(q) for q in questions]

    def _example(self, question: str) -> Example:
        answer, rationale = solve(question)
        return Example(
            id=stable_id("arithmetic", question), question=question, answer=str(answer), rationale=rationale
        )

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        user = f"{question}\nThe answer is {answer}. Show the steps that reach it."
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def extract(self, completion: str) -> str | None:
        return extract_number(completion)

    def read(self, completion: str, question: str = "") -> Reading:
        return read_number(completion, question)

    def score(self, predicted: str | None, gold: str) -> bool:
        return numbers_equal(predicted, gold)

    def verify(self, example: Example, completion: str) -> bool:
        return check_steps(example.question, completion)
