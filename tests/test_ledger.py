"""The cost ledger and the budget's hard stop, against a real priced OpenAI-compatible teacher on loopback.

The teacher (tests/teacher_server.py) reports exact usage for every request and counts them, so the
ledger's tokens and dollars can be checked against what the endpoint served, and a resumed run's
requests can be counted: a run whose budget runs out mid-synthesis stops at a chunk boundary with
the traces it accepted kept, and a re-run with a higher budget asks only for what is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect_live import tiny_spec
from teacher_server import COMPLETION_TOKENS, PROMPT_TOKENS, priced_teacher

from stratos.backends.openai_http import OpenAIBackend
from stratos.domains import get_domain
from stratos.ledger import Budget, BudgetExhausted, Entry
from stratos.spec import TaskSpec
from tasks.synthesize import SynthesisSpend, synthesize

PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per 1k tokens
PER_QUESTION = (PROMPT_TOKENS * PRICE_IN + COMPLETION_TOKENS * PRICE_OUT) / 1000  # one sample: $0.2


def _budget(tmp_path: Path, usd: float, name: str = "ledger-test") -> Budget:
    return Budget(
        store_uri=str(tmp_path / "store"), name=name, budget_usd=usd, price_per_hour=2.0, server_id="x/y/z"
    )


def test_charging_is_idempotent_persisted_and_checked_against_what_is_left(tmp_path):
    budget = _budget(tmp_path, 1.0)
    ledger = budget.ledger()
    entry = Entry(id="synthesis:k:1", stage="synthesis", item="32 questions", usd=0.6, basis="api")
    ledger.charge(entry)
    ledger.charge(entry)  # a resumed stage charging the same chunk again changes nothing
    again = budget.ledger()  # read back from the store
    assert [e.id for e in again.entries] == ["synthesis:k:1"] and again.spent == pytest.approx(0.6)
    again.check("training", 0.4)  # exactly what is left fits
    with pytest.raises(BudgetExhausted) as err:
        again.check("training", 0.41)
    message = str(err.value)
    assert (
        "before more training" in message and "$0.6000 of $1 spent" in message and "$0.4000 left" in message
    )
    assert "raise constraints.budget_usd" in message and "run again to resume" in message
    assert again.summary()["by_stage"] == {"synthesis": 0.6}


def test_synthesis_charges_exactly_the_tokens_the_endpoint_served_at_its_prices(tmp_path):
    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": 1}))
    questions = domain.load("train", 40, 0)
    budget = _budget(tmp_path, 100.0)
    with priced_teacher() as served:
        teacher = OpenAIBackend(
            served.url, "reference", price_per_1k_input=PRICE_IN, price_per_1k_output=PRICE_OUT
        )
        spend = SynthesisSpend(budget, "key", "openai", PER_QUESTION)
        report = synthesize(
            teacher, domain, questions, "alignment", tmp_path / "out", num_samples=2, spend=spend
        )
    entries = budget.ledger().entries
    assert report.accepted > 0 and [e.stage for e in entries] == [
        "synthesis",
        "synthesis",
    ]  # 32 + 8 questions
    assert sum(e.prompt_tokens for e in entries) == served.prompt_tokens == 40 * PROMPT_TOKENS
    assert sum(e.completion_tokens for e in entries) == served.completion_tokens == 40 * 2 * COMPLETION_TOKENS
    usd = (served.prompt_tokens * PRICE_IN + served.completion_tokens * PRICE_OUT) / 1000
    assert sum(e.usd for e in entries) == pytest.approx(usd) and {e.basis for e in entries} == {"api"}


def _priced_spec(url: str, budget_usd: float) -> dict:
    """The tiny spec with the priced teacher: probe 16 questions ($3.20), synthesis 48 (32 + 16: $6.40 + $3.20)."""
    teacher = {
        "name": "priced",
        "kind": "openai",
        "base_url": url,
        "model": "reference",
        "price_per_1k_input": PRICE_IN,
        "price_per_1k_output": PRICE_OUT,
    }
    spec = tiny_spec(Path("unused.jsonl"), name="ledger-run", teachers=[teacher])
    spec["constraints"] = {**spec["constraints"], "budget_usd": budget_usd}
    spec["strategy"] = {**spec["strategy"], "max_attempts": 1}
    return spec


def test_a_budget_that_runs_out_mid_synthesis_stops_keeps_the_traces_and_resumes_with_more(tmp_path):
    from flows import run_flow

    earlier = set(_attempt_logs())  # the session's STRATOS_HOME holds other tests' synthesis too
    with priced_teacher() as served:
        # $11: after the probe ($3.20) the first chunk ($6.40) fits, the second ($3.20) does not.
        stopped = run_flow(_priced_spec(served.url, 11.0))
        assert stopped.status == "budget_exhausted" and "before more synthesis" in stopped.message
        assert served.requests == 16 + 32  # the probe, then one chunk of 32 questions
        ledger = stopped.ledger
        assert ledger["by_stage"]["probe"] == pytest.approx(16 * PER_QUESTION)
        assert ledger["by_stage"]["synthesis"] == pytest.approx(32 * PER_QUESTION)
        assert ledger["spent_usd"] <= 11.0 and "BUDGET EXHAUSTED" in stopped.report_markdown
        kept = set(_attempt_logs()) - earlier
        assert sum(len(log.read_text().splitlines()) for log in kept) == 32  # the accepted chunk is kept

        before = served.requests
        finished = run_flow(_priced_spec(served.url, 100.0))
        assert finished.status == "trained", finished.message
        # Exactly what was missing: the last 16 questions, then the teacher's held-out questions.
        assert served.requests - before == 16 + finished.metrics["test_size"]
        assert max(served.prompts.values()) == 1  # no prompt was ever asked twice
        assert (
            finished.metrics["synthesis"]["accepted"] == 48
            and finished.metrics["synthesis"]["resumed_questions"] == 32
        )
    spent = finished.ledger
    api = [e for e in spent["entries"] if e["basis"] == "api"]
    assert sum(e["prompt_tokens"] for e in api) == served.prompt_tokens
    assert sum(e["completion_tokens"] for e in api) == served.completion_tokens
    assert spent["spent_usd"] <= 100.0 and "## Cost ledger" in finished.report_markdown
    assert json.dumps(spent).find("sk-") == -1  # names and counts only


def _attempt_logs() -> list[Path]:
    return list((Path(os.environ["STRATOS_HOME"]) / "work" / "synthesize").glob("*/attempts.jsonl"))
