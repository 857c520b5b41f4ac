"""Dual-mode synthesis with real zoo teachers: a strong teacher leads to alignment, a weak one to injection."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from stratos import zoo
from stratos.backends.hf import HFBackend
from stratos.domains import get_domain
from stratos.spec import ModelCandidate, TaskSpec
from tasks.select_teacher import select_teacher
from tasks.synthesize import choose_mode, synthesize, verdict

# The paper's scenario at CPU scale: the small mahjong variant the zoo's weak teacher is trained on.
MAHJONG_SMALL = {"hand_size": 10, "suits": 1, "honors": False}

pytestmark = pytest.mark.slow  # trains two zoo teachers unless the zoo already has them


def run_strategy(domain, teacher_dir, tmp_path, tau=0.5, train=48):
    backend = HFBackend(teacher_dir, name="zoo-teacher")
    probe = domain.load("train", 60, 11)[:40]
    choice = select_teacher(
        [ModelCandidate(name="zoo-teacher", model=str(teacher_dir))],
        {"zoo-teacher": backend},
        domain,
        probe,
        100,
        1000,
        80,
        2.0,
    )
    mode, _ = choose_mode(choice.accuracy, tau)
    questions = domain.load("train", 60 + train, 11)[60:]
    report = synthesize(
        backend, domain, questions, mode, tmp_path / mode, num_samples=2, max_attempts=4, temperature=0.7
    )
    return choice, mode, report, questions


def assert_verified(domain, report, questions, mode):
    by_id = {ex.id: ex for ex in questions}
    rows = pq.read_table(report.train_path).to_pylist()
    assert rows, "no accepted traces"
    for r in rows:
        assert verdict(domain, by_id[r["question_id"]], r["completion"], mode) == "accepted"
    print(
        f"{mode}: {report.accepted} accepted of {report.samples} samples "
        f"({report.acceptance_rate:.1%}), {report.coverage:.0%} of questions covered, verdicts {report.verdicts}"
    )


def test_strong_arithmetic_teacher_leads_to_alignment(tmp_path):
    domain = get_domain(TaskSpec(domain="arithmetic"))
    choice, mode, report, questions = run_strategy(domain, zoo.train_teacher(domain, "strong"), tmp_path)
    assert choice.accuracy >= 0.5 and mode == "alignment"
    assert_verified(domain, report, questions, mode)


def test_weak_mahjong_teacher_leads_to_injection(tmp_path):
    domain = get_domain(TaskSpec(domain="mahjong", options=MAHJONG_SMALL))
    choice, mode, report, questions = run_strategy(domain, zoo.train_teacher(domain, "weak"), tmp_path)
    assert choice.accuracy < 0.5 and mode == "injection"
    assert_verified(domain, report, questions, mode)
