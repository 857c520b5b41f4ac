"""A teacher that does not write '#### X': the bug a new user met, from probe to training data.

A stored teacher replays GSM8K's own reference solutions, rewritten the way chat models end them
("... The answer is 18."). Before flexible reading, its probe scored 0% for every candidate with
no warning and alignment kept 0 traces. Now: strict 0%, flexible 100%, a warning that says what
was done, and training data in the canonical format with the teacher's own text kept beside it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from stratos.backends.stored import StoredBackend
from stratos.domains import get_domain
from stratos.evaluation import evaluate
from stratos.spec import ModelCandidate, TaskSpec
from tasks.select_teacher import select_teacher
from tasks.synthesize import synthesize

GSM8K = get_domain(TaskSpec(domain="gsm8k"))


def chat_style(rationale: str, answer: str) -> str:
    """A GSM8K reference solution as a chat model writes it: no calculator marks, an answer sentence."""
    return re.sub(r"<<[^>]*>>", "", rationale) + f"\nThe answer is {answer}."


@pytest.fixture(scope="module")
def chat_teacher(tmp_path_factory) -> tuple[Path, list]:
    examples = GSM8K.load("train", 40, seed=0)
    path = tmp_path_factory.mktemp("teacher") / "chat.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": ex.question, "completion": chat_style(ex.rationale, ex.answer)}) + "\n"
            for ex in examples
        )
    )
    return path, examples


def test_probe_reports_strict_and_flexible_and_warns_instead_of_scoring_zero(chat_teacher, caplog):
    path, examples = chat_teacher
    backend = StoredBackend(path, name="chat-teacher")
    with caplog.at_level(logging.WARNING, logger="stratos.evaluation"):
        result = evaluate(backend, GSM8K, examples[:20])
    assert (result.strict_accuracy, result.flexible_accuracy, result.accuracy) == (0.0, 1.0, 1.0)
    assert result.rules == {"answer_is": 20}
    warning = result.format_warning
    assert warning and "'chat-teacher'" in warning and "100% of 20 completions" in warning
    assert "The answer is" in warning and "flexible accuracy 100.0%" in warning and "strict 0.0%" in warning
    assert warning in caplog.text  # logged, not only stored

    strict = evaluate(backend, GSM8K, examples[:20], match="strict")
    assert strict.accuracy == 0.0 and "set task.answer_match: flexible" in strict.format_warning


def test_teacher_selection_sees_the_teacher_and_says_why(chat_teacher):
    path, examples = chat_teacher
    candidate = ModelCandidate(name="chat-teacher", kind="stored", model=str(path))
    choice = select_teacher(
        [candidate],
        {"chat-teacher": StoredBackend(path, name="chat-teacher")},
        GSM8K,
        examples[:20],
        budget_usd=10,
        generations=100,
        server_memory_gib=80,
        server_price_per_hour=2.0,
    )
    assert choice.chosen == "chat-teacher" and choice.accuracy == 1.0
    score = choice.scores[0]
    assert (score.strict_accuracy, score.flexible_accuracy) == (0.0, 1.0) and score.format_warning


def test_alignment_keeps_the_traces_in_the_canonical_format_with_the_raw_text_beside(chat_teacher, tmp_path):
    path, examples = chat_teacher
    report = synthesize(
        StoredBackend(path, name="chat-teacher"), GSM8K, examples, "alignment", tmp_path, num_samples=1
    )
    assert report.accepted > 0.9 * len(examples)  # the prose-equation verifier passes most real solutions
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert all(c.endswith(f"\n#### {g}") for c, g in zip(train["completion"], train["gold"], strict=True))
    assert not train["completion"].str.contains("The answer is").any()  # the answer sentence became the line
    assert train["raw_completion"].str.endswith(".").all() and set(train["answer_rule"]) == {"answer_is"}

    strict = synthesize(
        StoredBackend(path), GSM8K, examples, "alignment", tmp_path / "strict", num_samples=1, match="strict"
    )
    assert strict.accepted == 0 and strict.verdicts == {"no_answer": len(examples)}
