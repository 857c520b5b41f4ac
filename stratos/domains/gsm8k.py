"""GSM8K: grade-school math word problems, real data; gold = the number after '####'.

The reference solutions carry calculator annotations `<<48/2=24>>`. The verifier
re-computes every annotation with a safe arithmetic evaluator (rounding or
truncation to the written precision is accepted). A completion without
annotations, as most teachers write, has its plain equations such as
`48 / 2 = 24` checked instead. A completion with nothing to re-compute cannot be
checked step by step; it passes only when its final answer equals the gold
answer, so an unverifiable rationale is never kept for a wrong answer.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from stratos.answers import Reading
from stratos.data import DATA_DIR
from stratos.domains.base import Example
from stratos.domains.common import (
    extract_number,
    format_number,
    matches_written,
    numbers_equal,
    parse_number,
    read_number,
    safe_eval,
)
from stratos.spec import TaskSpec

VENDORED_DIR = DATA_DIR / "gsm8k"
SPLITS = ("train", "test")

_ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUM = r"\$?\d[\d,]*(?:\.\d+)?"
# A flat chain "a op b [op c ...] = value" in prose ('x' and '×' are how people write '*'). The
# look-arounds skip chains that are part of a longer expression ("14 * 1/2 = 14 / 2 = 7",
# "2 + 1 1/2 = 3 1/2", "3 / 6 = 50%", "100/5 = 5A/5"), where re-computing the fragment would
# wrongly fail; the last link of a chain ("= 14 / 2 = 7") is still checked.
_EQUATION_RE = re.compile(
    rf"(?<![\w.$%/*+×÷-])(?<![\d*/+×÷-]\s)({_NUM}(?:\s*[-+*/x×÷]\s*{_NUM})+)"
    rf"\s*=\s*(-?{_NUM})(?![\w/]|[.,]\d|\s*[-+*/x×÷%(]|\s+\d)"
)

SYSTEM_PROMPT = "Solve the math problem step by step. End with a line '#### <number>'."


class GSM8K:
    """The GSM8K domain (see module docstring)."""

    name = "gsm8k"

    def __init__(self, task: TaskSpec) -> None:
        self.data_dir = _data_dir(task.dataset)

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        """A seeded sample of `size` problems from the split's file (all of them if it has fewer)."""
        if split not in SPLITS:
            raise ValueError(f"gsm8k split '{split}' does not exist; use one of {', '.join(SPLITS)}")
        path = self.data_dir / f"{split}.jsonl"
        examples = [_parse_line(line, path, n) for n, line in enumerate(_lines(path))]
        random.Random(seed).shuffle(examples)
        return examples[:size]

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        user = (
            f"{question}\n\nThe correct answer is {answer}. Write the step-by-step solution that "
            f"derives it, with every calculation written out, and end with '#### {answer}'."
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def extract(self, completion: str) -> str | None:
        return extract_number(completion)

    def read(self, completion: str, question: str = "") -> Reading:
        return read_number(completion, question)

    def score(self, predicted: str | None, gold: str) -> bool:
        return numbers_equal(predicted, gold)

    def verify(self, example: Example, completion: str) -> bool:
        """Every calculation in the completion re-computes; with none, the answer must be right."""
        answer = self.extract(completion)
        if answer is None:
            return False
        checks = calculation_checks(completion)
        if not checks:
            return self.score(answer, example.answer)
        return all(checks)


def calculation_checks(text: str) -> list[bool]:
    """One bool per calculation in `text`: does it re-compute?

    Calculator annotations when the text has any; otherwise plain equations in
    the prose (about 1% of GSM8K's own solutions, stripped of annotations, trip
    on a prose fragment, so the scan is only a fallback).
    """
    annotations = _ANNOTATION_RE.findall(text)
    if annotations:
        return [_check(expr, value) for expr, value in annotations]
    return [
        _check(expr.replace("×", "*").replace("x", "*").replace("÷", "/"), value)
        for expr, value in _EQUATION_RE.findall(text)
    ]


def _check(expr: str, written: str) -> bool:
    computed = safe_eval(expr)
    return computed is not None and matches_written(computed, written)


def _data_dir(dataset: str | None) -> Path:
    """The folder with train.jsonl and test.jsonl: the vendored slice, or the user's full copy."""
    if not dataset:
        return VENDORED_DIR
    path = Path(dataset).expanduser()
    folder = path.parent if path.is_file() else path
    missing = [f"{s}.jsonl" for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        raise ValueError(
            f"task.dataset = '{dataset}' has no {' or '.join(missing)}; for gsm8k give the folder holding "
            "GSM8K's train.jsonl and test.jsonl, or leave task.dataset empty to use the vendored slice"
        )
    return folder


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _parse_line(line: str, path: Path, index: int) -> Example:
    """One GSM8K record: rationale = the worked solution without its '####' line."""
    try:
        record = json.loads(line)
        question, solution = record["question"], record["answer"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path}, line {index + 1} is not a GSM8K record ({exc}); each line must be JSON with "
            "'question' and 'answer'"
        ) from None
    rationale, _, gold = solution.rpartition("####")
    value = parse_number(gold)
    if value is None:
        raise ValueError(f"{path}, line {index + 1}: the answer has no number after '####'")
    return Example(
        id=f"gsm8k-{path.stem}-{index}",
        question=question.strip(),
        answer=format_number(value),
        rationale=rationale.strip(),
        meta={"line": index},
    )
