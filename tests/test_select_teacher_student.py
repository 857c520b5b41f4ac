"""Teacher selection and student fit/pre-screen, with real backends and real model configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from stratos.backends.factory import from_candidate
from stratos.backends.hf import HFBackend
from stratos.domains import get_domain
from stratos.spec import Constraints, ModelCandidate, TaskSpec, TrainingSettings
from tasks.select_student import check_fit, fewshot_messages, select_student
from tasks.select_teacher import estimate_api_cost, select_teacher

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def arithmetic():
    return get_domain(TaskSpec(domain="arithmetic"))


def stored_teacher(tmp_path: Path, domain, examples, right: int) -> Path:
    """A recorded teacher that got the first `right` probe questions right and the rest wrong."""
    rows = [
        {"question": ex.question, "completion": f"{ex.rationale}\n#### {ex.answer if k < right else '0'}"}
        for k, ex in enumerate(examples)
    ]
    path = tmp_path / f"teacher-{right}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_most_accurate_eligible_teacher_wins_and_all_scores_are_kept(tmp_path, arithmetic, tiny_model_dir):
    probe = arithmetic.load("train", 20, 3)
    candidates = [
        ModelCandidate(
            name="logs-good", kind="stored", model=str(stored_teacher(tmp_path, arithmetic, probe, 17))
        ),
        ModelCandidate(
            name="logs-weak", kind="stored", model=str(stored_teacher(tmp_path, arithmetic, probe, 5))
        ),
        ModelCandidate(name="local", kind="hf", model=str(tiny_model_dir)),
        # Far too expensive for the budget: must be ruled out before a single request is sent.
        ModelCandidate(
            name="pricey-api",
            kind="openai",
            model="big",
            base_url="http://127.0.0.1:9/v1",
            price_per_1k_input=50.0,
            price_per_1k_output=50.0,
        ),
    ]
    backends = {c.name: from_candidate(c) for c in candidates}
    choice = select_teacher(
        candidates,
        backends,
        arithmetic,
        probe,
        budget_usd=10,
        generations=2000,
        server_memory_gib=80,
        server_price_per_hour=2.0,
        max_new_tokens=32,
    )
    assert choice.chosen == "logs-good" and choice.accuracy == pytest.approx(0.85)
    scores = {s.name: s for s in choice.scores}
    assert scores["logs-weak"].accuracy == pytest.approx(0.25) and scores["logs-weak"].eligible
    assert (
        scores["local"].accuracy is not None and scores["local"].cost_per_1k_questions > 0
    )  # GPU time costs
    assert not scores["pricey-api"].eligible and "over the $10 budget" in scores["pricey-api"].reason
    assert scores["pricey-api"].accuracy is None  # never probed
    assert choice.probe is not None and choice.probe.n == 20


def test_local_teacher_must_fit_the_server(arithmetic, tiny_model_dir):
    probe = arithmetic.load("train", 4, 3)
    c = ModelCandidate(name="local", kind="hf", model=str(tiny_model_dir))
    choice = select_teacher(
        [c],
        {"local": HFBackend(tiny_model_dir)},
        arithmetic,
        probe,
        10,
        100,
        server_memory_gib=1e-6,
        server_price_per_hour=1.0,
    )
    assert (
        choice.chosen is None
        and "needs ~" in choice.scores[0].reason
        and "no teacher is eligible" in choice.reason
    )


def test_api_cost_estimate_uses_prompt_length_and_generation_cap(arithmetic):
    probe = arithmetic.load("train", 10, 3)
    c = ModelCandidate(
        name="api",
        kind="openai",
        model="m",
        base_url="http://x/v1",
        price_per_1k_input=1.0,
        price_per_1k_output=2.0,
    )
    chars = sum(len(m["content"]) for ex in probe for m in arithmetic.messages(ex.question)) / 10
    assert estimate_api_cost(c, arithmetic, probe, 100, 50) == pytest.approx(
        100 * (chars / 4 / 1000 + 50 * 2 / 1000)
    )


def server_row(memory_gib: float, bandwidth: float, tflops: float, rtt: float = 5.0) -> pd.Series:
    return pd.Series(
        {
            "total_gpu_memory_gb": memory_gib,
            "bandwidth_gbs": bandwidth,
            "tflops": tflops,
            "gpu_count": 1,
            "latency_ms": rtt,
        }
    )


def qwen(tmp_path: Path, name: str) -> ModelCandidate:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(DATA / f"{name}.config.json", d / "config.json")
    return ModelCandidate(name=name, model=str(d))


def test_fit_names_memory_latency_and_size_reasons(tmp_path):
    big, small = qwen(tmp_path, "qwen2.5-7b"), qwen(tmp_path, "qwen2.5-0.5b")
    settings = TrainingSettings()
    loose = Constraints(max_latency_ms=10_000)
    a10 = server_row(24, 600, 125)
    h100 = server_row(80, 3350, 989)
    fit = check_fit(big, a10, loose, settings)
    assert (
        not fit.fits
        and fit.method == "lora"
        and "lora training needs ~" in fit.reason
        and "24 GiB" in fit.reason
    )
    assert check_fit(big, h100, loose, settings).fits
    slow = check_fit(big, h100, Constraints(max_latency_ms=500), settings)
    assert not slow.fits and "estimated request latency" in slow.reason
    capped = check_fit(
        big, h100, Constraints(max_latency_ms=10_000, max_student_params=1_000_000_000), settings
    )
    assert not capped.fits and "max_student_params" in capped.reason
    ok = check_fit(small, a10, Constraints(max_latency_ms=2000), settings)
    assert ok.fits and ok.params == 494_032_768 and ok.latency_ms < 2000


def test_fewshot_prompt_puts_demos_before_the_question(arithmetic):
    msgs = fewshot_messages(arithmetic, [("1+1", "1+1+0=2\n#### 2")], "2+2")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"] == "2+2" and msgs[2]["content"].endswith("#### 2")


def test_prescreen_measures_real_students_and_applies_the_threshold(tmp_path, arithmetic, tiny_model_dir):
    students = [ModelCandidate(name="nano", model=str(tiny_model_dir))]
    backends = {"nano": HFBackend(tiny_model_dir)}
    sample = arithmetic.load("test", 8, 0)
    demos = [(ex.question, f"{ex.rationale}\n#### {ex.answer}") for ex in arithmetic.load("train", 2, 0)]
    server = server_row(24, 600, 125)
    passed = select_student(
        students,
        backends,
        arithmetic,
        server,
        Constraints(),
        TrainingSettings(),
        sample,
        demos,
        threshold=0.0,
        max_new_tokens=16,
    )
    assert passed.chosen == "nano" and passed.prescreen[0].fewshot_accuracy == 0.0  # random weights
    failed = select_student(
        students,
        backends,
        arithmetic,
        server,
        Constraints(),
        TrainingSettings(),
        sample,
        demos,
        threshold=0.5,
        max_new_tokens=16,
    )
    assert failed.chosen is None and "no student reaches pre-screen threshold 0.5" in failed.reason
