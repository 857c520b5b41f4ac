"""The evaluation harness on a backend whose answers are known: recorded right and wrong completions."""

from __future__ import annotations

import json

import pytest

from stratos.backends.base import SamplingParams
from stratos.backends.stored import StoredBackend
from stratos.evaluation import EvalResult, evaluate


@pytest.fixture
def known(tmp_path, tiny_domain):
    """Five questions; recorded completions: three right, one wrong, one with no answer line."""
    examples = tiny_domain.load("test", 5, seed=0)
    texts = [
        f"{examples[0].rationale}\n#### {examples[0].answer}",
        f"#### {examples[1].answer}",
        f"thinking...\n#### {examples[2].answer}",
        f"#### {int(examples[3].answer) + 1}",
        "I am not sure.",
    ]
    rows = [
        {"question": ex.question, "completion": text, "completion_tokens": 10, "latency_s": 0.1 * (i + 1)}
        for i, (ex, text) in enumerate(zip(examples, texts, strict=True))
    ]
    path = tmp_path / "known.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return StoredBackend(path, name="known"), examples


def test_scores_and_latencies_are_exact(known, tiny_domain):
    backend, examples = known
    result = evaluate(backend, tiny_domain, examples, batch_size=2)  # three batches
    assert (result.n, result.correct, result.accuracy) == (5, 3, 0.6)
    assert [r.correct for r in result.records] == [True, True, True, False, False]
    assert [r.id for r in result.records] == [ex.id for ex in examples]
    assert result.records[3].prediction == str(int(examples[3].answer) + 1)
    assert result.records[4].prediction is None and result.records[4].completion == "I am not sure."
    assert result.latency_p50_s == pytest.approx(0.3)
    assert result.latency_p95_s == pytest.approx(0.48)  # linear interpolation between 0.4 and 0.5
    assert result.completion_tokens == 50 and result.tokens_per_second > 0
    assert result.cost_usd == 0.0 and result.backend == "known" and result.domain == tiny_domain.name


def test_counts_only_this_evaluation_from_a_used_backend(known, tiny_domain):
    backend, examples = known
    evaluate(backend, tiny_domain, examples)
    again = evaluate(backend, tiny_domain, examples[:2])
    assert again.completion_tokens == 20 and again.n == 2


def test_json_round_trip(known, tiny_domain):
    backend, examples = known
    result = evaluate(backend, tiny_domain, examples)
    again = EvalResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and isinstance(again.records[0].correct, bool)


def test_rejects_inputs_that_cannot_be_scored(known, tiny_domain):
    backend, examples = known
    with pytest.raises(ValueError, match="no examples"):
        evaluate(backend, tiny_domain, [])
    with pytest.raises(ValueError, match="params.n = 3.*use n=1"):
        evaluate(backend, tiny_domain, examples, SamplingParams(n=3))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(backend, tiny_domain, examples, batch_size=0)
