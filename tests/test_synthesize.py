"""Synthesis: strategy choice, rejection sampling verdicts, de-duplication, Parquet output, resume."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from stratos.backends.stored import StoredBackend
from stratos.domains import get_domain
from stratos.spec import TaskSpec
from tasks.synthesize import choose_mode, restates_answer, synthesize, verdict


@pytest.fixture(scope="module")
def arithmetic():
    return get_domain(TaskSpec(domain="arithmetic"))


def test_mode_follows_tau_and_can_be_forced():
    assert choose_mode(0.9, 0.5)[0] == "alignment"
    assert choose_mode(0.5, 0.5)[0] == "alignment"  # at tau: alignment
    assert choose_mode(0.12, 0.5)[0] == "injection"
    mode, why = choose_mode(0.9, 0.5, force="injection")
    assert mode == "injection" and "forced" in why


def test_restating_the_answer_is_caught():
    assert restates_answer("18\n36 / 4 = 9", "18")
    assert restates_answer("The answer is 18. 36/4=9, 36-9=27", "18")
    assert restates_answer("18", "18")
    assert not restates_answer("36 / 4 = <<36/4=9>>9\n27 - 9 = <<27-9=18>>18", "18")
    gsm = get_domain(TaskSpec(domain="gsm8k"))
    ex = gsm.load("train", 1, 0)[0]
    good = f"{ex.rationale}\n#### {ex.answer}"
    assert verdict(gsm, ex, good, "injection") == "accepted"
    assert verdict(gsm, ex, f"The answer is {ex.answer}.\n{good}", "injection") == "restates_answer"


def record(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_alignment_keeps_only_correct_verified_distinct_traces(tmp_path, arithmetic):
    examples = arithmetic.load("train", 3, 0)
    rows = []
    for ex in examples:
        good = f"{ex.rationale}\n#### {ex.answer}"
        rows += [
            {"question": ex.question, "completion": c}
            for c in (good, good, good.replace(f"#### {ex.answer}", "#### 1"), "no idea")
        ]
    teacher = StoredBackend(record(tmp_path / "teacher.jsonl", rows), name="recorded")
    report = synthesize(teacher, arithmetic, examples, "alignment", tmp_path / "out", num_samples=4)
    assert report.verdicts == {"accepted": 3, "duplicate": 3, "wrong_answer": 3, "no_answer": 3}
    assert report.accepted == 3 and report.acceptance_rate == pytest.approx(0.25) and report.coverage == 1.0
    train = pq.read_table(report.train_path).to_pylist()
    assert {r["question_id"] for r in train} == {ex.id for ex in examples}
    assert set(train[0]) >= {"question_id", "teacher", "mode", "sample_index", "verdict", "completion"}
    assert all(
        r["verdict"] == "accepted" and r["teacher"] == "recorded" and r["mode"] == "alignment" for r in train
    )
    assert len(pq.read_table(report.samples_path)) == 12
    assert json.loads((tmp_path / "out/report.json").read_text())["acceptance_rate"] == pytest.approx(0.25)


class Interrupting:
    """Wraps a backend and fails after `limit` generate() calls: a worker lost mid-synthesis."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.calls, self.prompts = inner, limit, 0, 0
        self.name, self.usage = inner.name, inner.usage

    def generate(self, prompts, params):
        if self.calls == self.limit:
            raise ConnectionError("worker lost")
        self.calls += 1
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params)


def test_injection_retries_until_accepted_and_resumes_after_interruption(tmp_path, arithmetic):
    examples = arithmetic.load("train", 40, 1)  # two chunks of 32 + 8
    # Recorded: one bad trace, then the right one; injection must retry to reach it.
    rows = [
        {"question": ex.question, "completion": c}
        for ex in examples
        for c in (f"{ex.rationale}\n#### 0", f"{ex.rationale}\n#### {ex.answer}")
    ]
    path = record(tmp_path / "t.jsonl", rows)
    first = Interrupting(StoredBackend(path), limit=1)  # finishes chunk 1 (1 round of n=2), dies on chunk 2
    with pytest.raises(ConnectionError):
        synthesize(first, arithmetic, examples, "injection", tmp_path / "out", num_samples=2, max_attempts=4)
    assert len((tmp_path / "out/attempts.jsonl").read_text().splitlines()) == 32
    second = Interrupting(StoredBackend(path), limit=99)
    report = synthesize(
        second, arithmetic, examples, "injection", tmp_path / "out", num_samples=2, max_attempts=4
    )
    assert second.prompts == 8  # only the questions the first run did not finish
    assert report.resumed_questions == 32 and report.questions_covered == 40
    assert report.verdicts == {"wrong_answer": 40, "accepted": 40}


def test_truncated_log_line_is_redone(tmp_path, arithmetic):
    examples = arithmetic.load("train", 2, 2)
    rows = [{"question": ex.question, "completion": f"{ex.rationale}\n#### {ex.answer}"} for ex in examples]
    path = record(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    synthesize(StoredBackend(path), arithmetic, examples, "alignment", out, num_samples=1)
    lines = (out / "attempts.jsonl").read_text().splitlines()
    (out / "attempts.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # cut mid-line
    again = Interrupting(StoredBackend(path), limit=99)
    report = synthesize(again, arithmetic, examples, "alignment", out, num_samples=1)
    assert again.prompts == 1 and report.accepted == 2
