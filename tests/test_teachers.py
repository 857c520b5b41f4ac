"""Zoo teachers: really trained, then measured by the evaluation harness (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratos import zoo
from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend
from stratos.domains import get_domain
from stratos.evaluation import evaluate
from stratos.spec import TaskSpec
from stratos.teachers import injection_validity, sft_rows

# 2-digit addition; Mahjong with 10 tiles of one suit, the variant a CPU-trained model can
# learn to explain in minutes (with full 13-tile hands a "micro" model writes few valid rationales).
ARITHMETIC = TaskSpec(domain="arithmetic")
MAHJONG = TaskSpec(domain="mahjong", options={"hand_size": 10, "suits": 1, "honors": False})


def test_sft_rows_hold_every_injection_and_a_share_of_forward(tiny_domain):
    examples = tiny_domain.load("train", 10, seed=0)
    rows = sft_rows(tiny_domain, examples, forward_share=0.3)
    injection = [r for r in rows if "Answer:" in r["prompt"][-1]["content"]]
    assert len(injection) == 10 and len(rows) == 13
    assert all(
        r["completion"][0]["content"].endswith(f"#### {ex.answer}")
        for r, ex in zip(injection, examples, strict=True)
    )


def test_sft_rows_without_injection_are_forward_only(tiny_domain):
    examples = tiny_domain.load("train", 10, seed=0)
    rows = sft_rows(tiny_domain, examples, forward_share=1.0, injection=False)
    assert len(rows) == 10
    assert all(r["prompt"] == tiny_domain.messages(ex.question) for r, ex in zip(rows, examples, strict=True))


def test_base_student_is_pretrained_briefly_and_cached(tiny_domain, monkeypatch):
    from stratos import teachers

    tiny = {**teachers.RECIPES["base"], "train_questions": 64, "epochs": 1, "val_size": 8, "test_size": 16}
    monkeypatch.setitem(teachers.RECIPES, "base", tiny)
    path = zoo.resolve("zoo:base-nano", tiny_domain)
    assert "base-tiny-addition-nano-" in path
    meta = json.loads((Path(path) / "meta.json").read_text())
    assert meta["steps"] == 2 and meta["data"]["injection_rows"] == 0 and meta["data"]["forward_rows"] == 64
    assert meta["loss_last"] < meta["loss_first"]  # it learnt something: not a random model renamed
    assert zoo.resolve("zoo:base-nano", tiny_domain) == path  # cached, not rebuilt
    with pytest.raises(ValueError, match="zoo:base-mini"):
        zoo.resolve("zoo:base-huge", tiny_domain)


def test_a_small_user_file_still_gets_a_validation_slice(tmp_path):
    from stratos.teachers import RECIPES, teacher_examples

    data = tmp_path / "mine.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"{k}+1", "answer": str(k + 1)}) + "\n" for k in range(60))
    )
    domain = get_domain(TaskSpec(domain="custom", dataset=str(data), scorer="numeric"))
    drawn = teacher_examples(domain, RECIPES["strong"], seed=0)
    train_rows = len(domain.load("train", 1000, 0))
    assert len(drawn["val"]) == train_rows // 5 and len(drawn["train"]) == train_rows - train_rows // 5
    assert not {ex.id for ex in drawn["val"]} & {ex.id for ex in drawn["train"]}


def test_unknown_strength_is_rejected(tiny_domain):
    with pytest.raises(ValueError, match="unknown teacher strength 'medium'"):
        zoo.train_teacher(tiny_domain, "medium")


def _measured(domain, teacher) -> tuple[float, float, dict]:
    meta = json.loads((teacher / "meta.json").read_text())
    backend = HFBackend(teacher, batch_size=64)
    test = domain.load("test", meta["recipe"]["test_size"], seed=0)
    params = SamplingParams(max_new_tokens=meta["max_new_tokens"])
    accuracy = evaluate(backend, domain, test, params, batch_size=64).accuracy
    return accuracy, injection_validity(backend, domain, test, meta["max_new_tokens"]), meta


@pytest.mark.slow
def test_strong_arithmetic_teacher_reaches_90_percent():
    domain = get_domain(ARITHMETIC)
    teacher = zoo.train_teacher(domain, "strong")
    accuracy, validity, meta = _measured(domain, teacher)
    # meta.json records what the harness measures (batches differ, so allow a rare flipped greedy token)
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=0.02)
    assert accuracy >= 0.9
    assert validity >= 0.9
    assert zoo.train_teacher(domain, "strong") == teacher  # cached: no second training


@pytest.mark.slow
def test_weak_mahjong_teacher_solves_poorly_but_writes_good_rationales():
    domain = get_domain(MAHJONG)
    teacher = zoo.train_teacher(domain, "weak")
    accuracy, validity, meta = _measured(domain, teacher)
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=0.02)
    assert 0.05 <= accuracy <= 0.25
    assert validity >= 0.5  # answer-conditioned rationales are good where solving is not
    assert validity > accuracy
