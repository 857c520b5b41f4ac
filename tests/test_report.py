"""The multi-objective candidate score and the student-vs-teacher report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratos.evaluation import EvalResult
from stratos.scoring import CANDIDATE_OBJECTIVES, candidate_scores
from tasks.report import build_report, report_markdown, roofline_tokens_per_second, usd_per_million_tokens

DATA = Path(__file__).parent / "data"
SERVER = {
    "id": "lambda/gpu_1x_a10/us-east-1",
    "price": 0.75,
    "bandwidth_gbs": 600.0,
    "tflops": 125.0,
    "gpu_count": 1,
}


def _objectives(accuracy, latency, hours, cost):
    return {"accuracy": accuracy, "latency_s": latency, "training_hours": hours, "cost_usd": cost}


def test_candidate_scores_reward_balance_and_bound_to_unit_interval():
    scores = candidate_scores(
        {
            "best": _objectives(0.9, 0.1, 1.0, 10.0),
            "worst": _objectives(0.1, 0.9, 9.0, 90.0),
            "mixed": _objectives(0.9, 0.9, 1.0, 90.0),
        }
    )
    assert scores["best"] == pytest.approx(1.0) and scores["worst"] == pytest.approx(0.0)
    assert scores["mixed"] == pytest.approx(1 - (2 / 4) ** 0.5)  # two of four axes at their worst
    # Weights move the balance: caring only about accuracy makes 'mixed' as good as 'best'.
    only_accuracy = candidate_scores(
        {"best": _objectives(0.9, 0.1, 1, 10), "mixed": _objectives(0.9, 0.9, 1, 90)},
        {"latency_s": 0, "training_hours": 0, "cost_usd": 0},
    )
    assert only_accuracy == {"best": pytest.approx(1.0), "mixed": pytest.approx(1.0)}


def test_candidate_scores_name_the_bad_input():
    with pytest.raises(ValueError, match="candidate 'x' lacks objective 'cost_usd'"):
        candidate_scores({"x": {k: 1.0 for k in list(CANDIDATE_OBJECTIVES)[:3]}})
    with pytest.raises(ValueError, match="weight 'speed' names no objective"):
        candidate_scores({"x": _objectives(1, 1, 1, 1)}, {"speed": 1.0})


def _result(name: str, accuracy: float, latency: float, tps: float, cost: float = 0.0) -> EvalResult:
    n = 20
    return EvalResult(
        backend=name,
        domain="arithmetic",
        n=n,
        correct=round(accuracy * n),
        accuracy=accuracy,
        latency_p50_s=latency,
        latency_p95_s=latency * 1.5,
        tokens_per_second=tps,
        cost_usd=cost,
        prompt_tokens=400,
        completion_tokens=2000,
        seconds=2000 / tps,
    )


def test_serving_price_formula():
    assert usd_per_million_tokens(3.6, 1000.0) == pytest.approx(1.0)  # $3.6/h at 1000 tok/s = 3.6M tok/h
    with pytest.raises(ValueError, match="tokens_per_second"):
        usd_per_million_tokens(1.0, 0.0)


def test_report_side_by_side(tmp_path):
    """A 7B teacher (roofline from its config) against a 0.5B student trained for one hour."""
    student = _result("student", 0.8, 0.05, 500.0)
    teacher = _result("teacher", 0.9, 0.40, 60.0)
    meta = {"method": "lora", "steps": 100, "wall_time_s": 3600.0, "loss_first": 2.0, "loss_last": 0.5}
    student_dir, teacher_dir = tmp_path / "student", tmp_path / "teacher"
    for path, config in ((student_dir, "qwen2.5-0.5b.config.json"), (teacher_dir, "qwen2.5-7b.config.json")):
        path.mkdir()
        (path / "config.json").write_text((DATA / config).read_text())
    report = build_report(student, teacher, SERVER, meta, student_dir, teacher_dir, volume_tokens=10_000_000)
    s, t = report["candidates"]["student"], report["candidates"]["teacher"]
    assert s["tps_source"] == t["tps_source"] == "roofline"
    # Decode is bandwidth-bound: ~14x fewer weight bytes make the student several times faster and cheaper.
    assert s["tokens_per_second"] > 5 * t["tokens_per_second"]
    assert s["usd_per_1m_tokens"] == pytest.approx(usd_per_million_tokens(0.75, s["tokens_per_second"]))
    assert s["training_usd"] == pytest.approx(0.75) and t["training_usd"] == 0.0
    assert s["projected_cost_usd"] == pytest.approx(0.75 + s["usd_per_1m_tokens"] * 10)
    # Two candidates: each axis is 0 or 1. Student wins latency and cost, teacher accuracy and training time.
    assert s["score"] == pytest.approx(t["score"]) == pytest.approx(1 - 0.5**0.5)
    assert roofline_tokens_per_second(student_dir, SERVER) == pytest.approx(s["tokens_per_second"])

    assert json.loads(json.dumps(report))["candidates"]["student"]["accuracy"] == 0.8
    markdown = report_markdown(report)
    assert (
        "| accuracy | 90.0% | 80.0% |" in markdown and "| tokens/s source | roofline | roofline |" in markdown
    )


def test_report_prices_an_api_teacher_by_what_it_paid(tmp_path):
    student_dir = tmp_path / "student"
    student_dir.mkdir()
    (student_dir / "config.json").write_text((DATA / "qwen2.5-0.5b.config.json").read_text())
    teacher = _result("gpt-4o", 0.9, 0.8, 50.0, cost=0.02)  # $0.02 for 2000 generated tokens
    report = build_report(
        _result("student", 0.6, 0.05, 500.0),
        teacher,
        SERVER,
        {"wall_time_s": 60.0},
        student_dir,
        teacher_model=None,
    )
    t = report["candidates"]["teacher"]
    assert t["tps_source"] == "api-price" and t["usd_per_1m_tokens"] == pytest.approx(10.0)


def test_report_refuses_different_splits(tmp_path):
    other = _result("teacher", 0.9, 0.4, 60.0)
    other.n = 10
    with pytest.raises(ValueError, match="same split"):
        build_report(_result("student", 0.8, 0.05, 500.0), other, SERVER, {"wall_time_s": 1.0}, tmp_path)
