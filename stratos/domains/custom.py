"""A user's own task: question/answer pairs from a file, compared by a named scorer.

Data: JSONL, CSV, Parquet, or a folder written by `datasets`' `save_to_disk`
(a Dataset, or a DatasetDict whose 'train'/'test' splits are then used as is).
Without given splits, each row goes to train or test by a hash of its question
(TEST_FRACTION to test), so no seed or size can move a test question into training.

Scorers (task.scorer): exact (whitespace-trimmed text), numeric ('72' == '72.0'),
set (items split on commas, semicolons or whitespace, order and repeats ignored),
or 'package.module:function' taking (prediction, gold) and returning a bool.

There is no reasoning verifier for arbitrary data: `verify` accepts every
completion that has an answer line.

Options: rationale_column (a column of reference reasoning), test_fraction.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from stratos.answers import Reading, last_number_candidates, read_answer, read_strict
from stratos.domains.base import Example
from stratos.domains.common import leading_number, numbers_equal, split_of, stable_id
from stratos.files import read_utf8
from stratos.spec import TaskSpec

Scorer = Callable[[str, str], bool]
TEST_FRACTION = 0.2
# A question or answer longer than this is a mistake (a pasted file, a missing delimiter), not a
# task: every model here has a context of a few thousand tokens, and the zoo's tokenizer training
# is quadratic in the length of a text.
MAX_CELL_CHARS = 100_000
SYSTEM_PROMPT = "Answer the question. Think step by step, then end with a line '#### <answer>'."
_SET_SPLIT_RE = re.compile(r"[,;\s]+")


def exact_match(predicted: str, gold: str) -> bool:
    return " ".join(predicted.split()) == " ".join(gold.split())


def set_match(predicted: str, gold: str) -> bool:
    def items(text: str) -> set[str]:
        return {item for item in _SET_SPLIT_RE.split(text.strip()) if item}

    return items(predicted) == items(gold)


BUILTIN_SCORERS: dict[str, Scorer] = {"exact": exact_match, "numeric": numbers_equal, "set": set_match}


def resolve_scorer(name: str) -> Scorer:
    """A built-in scorer, or the function a 'package.module:function' path names."""
    if name in BUILTIN_SCORERS:
        return BUILTIN_SCORERS[name]
    fix = "use exact, numeric, set, or 'package.module:function' importable in the run's environment"
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(f"task.scorer = '{name}' is not a known scorer; {fix}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"task.scorer = '{name}': cannot import '{module_name}' ({exc}); {fix}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"task.scorer = '{name}': '{module_name}' has no function '{attr}'; {fix}")
    return function


# Where a row sits in the user's file, as the user would look for it: "line 8" (JSONL, CSV: the
# line the record starts on), "row 6" (Parquet), "split 'train' row 6" (a saved dataset).
Row = tuple[str, dict[str, Any]]


def read_rows(path: Path) -> dict[str, list[Row]]:
    """Rows of a data file or saved dataset with where each is, keyed by split ('all' without splits)."""
    if path.is_dir():
        return _read_saved_dataset(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return {"all": _read_jsonl(path)}
    if suffix == ".csv":
        return {"all": _read_csv(path)}
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        return {"all": [(f"row {i + 1}", row) for i, row in enumerate(frame.to_dict(orient="records"))]}
    raise ValueError(
        f"task.dataset = '{path}' has an unknown format '{suffix}'; use .jsonl, .csv, .parquet, "
        "or a folder written by datasets' save_to_disk"
    )


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(read_utf8(path, "task.dataset").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"task.dataset '{path}', line {number} is not JSON ({exc}); fix that line"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"task.dataset '{path}', line {number} is not a JSON object with named columns")
        rows.append((f"line {number}", row))
    return rows


def _read_csv(path: Path) -> list[Row]:
    """CSV cells as text ('007' and '1e3' are answers, not numbers to reformat), with each record's line."""
    reader = csv.DictReader(io.StringIO(read_utf8(path, "task.dataset"), newline=""))
    rows, line = [], 2  # the header is line 1; a quoted cell may span lines
    try:
        for record in reader:
            rows.append((f"line {line}", {k: v for k, v in record.items() if k is not None}))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ValueError(
            f"task.dataset '{path}', line {reader.line_num} is not valid CSV ({exc}); fix that line"
        ) from None
    return rows


def _read_saved_dataset(path: Path) -> dict[str, list[Row]]:
    import datasets  # loads pyarrow and fsspec: only for a saved-dataset folder

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise ValueError(
            f"task.dataset = '{path}' is a folder but not a saved dataset ({exc}); give a JSONL, CSV or "
            "Parquet file, or a folder written by Dataset.save_to_disk"
        ) from None
    if isinstance(data, datasets.DatasetDict):
        return {
            name: [(f"split '{name}' row {i + 1}", row) for i, row in enumerate(split.to_list())]
            for name, split in data.items()
        }
    return {"all": [(f"row {i + 1}", row) for i, row in enumerate(data.to_list())]}


class Custom:
    """A user dataset with a chosen scorer (see module docstring)."""

    name = "custom"

    def __init__(self, task: TaskSpec) -> None:
        if not task.dataset:
            raise ValueError(
                "domain 'custom' needs a dataset; set task.dataset to a JSONL, CSV or Parquet file"
            )
        self.path = Path(task.dataset).expanduser()
        if not self.path.exists():
            raise ValueError(
                f"task.dataset = '{task.dataset}' does not exist; give the path to your data file"
            )
        self.question_column, self.answer_column = task.question_column, task.answer_column
        options = dict(task.options)
        self.rationale_column: str | None = options.pop("rationale_column", None)
        self.test_fraction = options.pop("test_fraction", TEST_FRACTION)
        if not isinstance(self.test_fraction, int | float) or not 0 < self.test_fraction < 1:
            raise ValueError(
                f"task.options.test_fraction = {self.test_fraction!r}: use a number between 0 and 1"
            )
        if options:
            raise ValueError(
                f"task.options.{sorted(options)[0]} is not a custom-domain option; use rationale_column, test_fraction"
            )
        self.scorer_name = task.scorer
        self._scorer = resolve_scorer(task.scorer)  # fail now, before any model is loaded
        self._rows: dict[str, list[Row]] | None = None

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        """A seeded sample of the split's rows (all of them when it has fewer than `size`)."""
        if split not in ("train", "test"):
            raise ValueError(f"custom split '{split}' does not exist; use 'train' or 'test'")
        examples = [self._example(row, where) for where, row in self._split_rows(split)]
        random.Random(f"custom-{seed}-{split}").shuffle(examples)
        return examples[:size]

    def _split_rows(self, split: str) -> list[Row]:
        if self._rows is None:
            self._rows = read_rows(self.path)  # one read per domain object: preflight loads both splits
        by_split = self._rows
        first = next((rows[0][1] for rows in by_split.values() if rows), None)
        if first is None:
            raise ValueError(f"task.dataset '{self.path}' has no rows; give a file with question/answer rows")
        self._check_columns(first)
        if split in by_split:
            return by_split[split]
        if "all" not in by_split:
            raise ValueError(
                f"task.dataset '{self.path}' has splits {sorted(by_split)} but no '{split}'; "
                "save a DatasetDict with 'train' and 'test' splits, or a single Dataset"
            )
        column = self.question_column
        return [
            (where, r)
            for where, r in by_split["all"]
            if split_of(f"custom:{r.get(column)}", self.test_fraction) == split
        ]

    def _example(self, row: dict[str, Any], where: str) -> Example:
        question, answer = _text(row[self.question_column]), _text(row[self.answer_column])
        if not question or not answer:
            empty = self.question_column if not question else self.answer_column
            raise ValueError(
                f"task.dataset '{self.path}', {where}: '{empty}' is empty; fill or drop that row"
            )
        rationale = _text(row.get(self.rationale_column)) if self.rationale_column else ""
        for column, text in ((self.question_column, question), (self.answer_column, answer)):
            if len(text) > MAX_CELL_CHARS:
                raise ValueError(
                    f"task.dataset '{self.path}', {where}: '{column}' is {len(text):,} characters long, more "
                    f"than the {MAX_CELL_CHARS:,} a question or answer may have; shorten or drop that row"
                )
        return Example(
            id=stable_id("custom", question), question=question, answer=answer, rationale=rationale
        )

    def _check_columns(self, row: dict[str, Any]) -> None:
        wanted = [
            ("task.question_column", self.question_column),
            ("task.answer_column", self.answer_column),
            ("task.options.rationale_column", self.rationale_column),
        ]
        for field, column in wanted:
            if column is not None and column not in row:
                raise ValueError(
                    f"{field} = '{column}' is not a column of '{self.path}'; columns present: "
                    f"{', '.join(map(str, row))}. Set {field} to one of them"
                )

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        user = f"{question}\n\nThe correct answer is: {answer}\nExplain step by step how to reach it, then end with '#### {answer}'."
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def extract(self, completion: str) -> str | None:
        return read_strict(completion, self._normalise)

    def read(self, completion: str, question: str = "") -> Reading:
        # Numbers have a safe last resort (the last number); free text has none: a sentence
        # without a stated answer is no answer.
        fallback = last_number_candidates if self.scorer_name == "numeric" else None
        return read_answer(completion, self._normalise, fallback, question)

    def _normalise(self, text: str) -> str | None:
        if self.scorer_name == "numeric":
            return leading_number(text)
        return text.strip() or None

    def score(self, predicted: str | None, gold: str) -> bool:
        if predicted is None:
            return False
        return bool(self._scorer(predicted, gold))

    def verify(self, example: Example, completion: str) -> bool:
        """No reasoning verifier for arbitrary data; only the answer line is required."""
        return self.extract(completion) is not None


def _text(value: Any) -> str:
    """A cell as answer text: JSON/Parquet numbers like 72.0 stay as written by str()."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN: an empty Parquet/CSV cell
        return ""
    return str(value).strip()
