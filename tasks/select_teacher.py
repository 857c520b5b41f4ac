"""Stage 2: choose the teacher by accuracy on a probe of the task, within the budget.

Every candidate (a local model, an OpenAI-compatible endpoint, or stored
completions) is scored on the same probe questions with the evaluation
harness: accuracy, latency, and dollars per 1k questions. A local teacher must
fit the chosen server's GPU memory; an API teacher's planned synthesis
(training questions x samples) must fit the budget, estimated before the probe
from prompt length and the generation cap, and again after it from measured
token counts. The most accurate eligible teacher wins; ties go to the cheaper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stratos.backends.base import Backend, SamplingParams
from stratos.domains.base import Domain, Example
from stratos.estimates import footprint, load_config
from stratos.spec import ModelCandidate
from tasks.evaluate import EvalResult, evaluate

CHARS_PER_TOKEN = 4  # rough English/BPE ratio, only for the pre-probe cost estimate


@dataclass
class TeacherScore:
    """One candidate's probe result and eligibility."""

    name: str
    kind: str
    eligible: bool
    reason: str
    accuracy: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    cost_per_1k_questions: float | None = None
    planned_synthesis_usd: float | None = None
    memory_gib: float | None = None


@dataclass
class TeacherChoice:
    chosen: str | None
    accuracy: float | None
    scores: list[TeacherScore]
    reason: str
    probe: EvalResult | None = None  # the chosen teacher's probe (its completions seed pre-screen demos)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("probe")
        return data


def planned_questions(train_size: int, num_samples: int, max_attempts: int) -> int:
    """Generations synthesis may ask for: n samples per question, up to the attempt budget."""
    return train_size * max(num_samples, max_attempts)


def _price_per_token(candidate: ModelCandidate) -> tuple[float, float]:
    return candidate.price_per_1k_input / 1000, candidate.price_per_1k_output / 1000


def estimate_api_cost(candidate: ModelCandidate, domain: Domain, probe: list[Example], generations: int,
                      max_new_tokens: int) -> float:  # fmt: skip
    """Dollars for `generations` completions, before generating: prompt chars/4 in, the cap out."""
    prompt_chars = sum(len(m["content"]) for ex in probe for m in domain.messages(ex.question)) / len(probe)
    p_in, p_out = _price_per_token(candidate)
    return generations * (prompt_chars / CHARS_PER_TOKEN * p_in + max_new_tokens * p_out)


def _local_fit(candidate: ModelCandidate, server_memory_gib: float) -> tuple[bool, str, float | None]:
    if not Path(candidate.model).exists():
        return (
            True,
            "hub model: memory checked when loaded",
            None,
        )  # a hub id needs network to read its config
    need = footprint(load_config(candidate.model), context_tokens=2048, batch=8).serve_gib
    if need > server_memory_gib:
        return False, f"needs ~{need:.1f} GiB to serve but the server has {server_memory_gib:.0f} GiB", need
    return True, f"fits: ~{need:.2f} GiB of {server_memory_gib:.0f} GiB", need


def score_teacher(candidate: ModelCandidate, backend: Backend, domain: Domain, probe: list[Example],
                  budget_usd: float, generations: int, server_memory_gib: float, server_price_per_hour: float,
                  max_new_tokens: int = 256) -> tuple[TeacherScore, EvalResult | None]:  # fmt: skip
    """Eligibility checks, then the probe; returns the score and the probe result (None if not probed)."""
    score = TeacherScore(candidate.name, candidate.kind, eligible=True, reason="")
    if candidate.kind == "hf":
        ok, why, score.memory_gib = _local_fit(candidate, server_memory_gib)
        if not ok:
            score.eligible, score.reason = False, why
            return score, None
    if candidate.kind == "openai":
        estimate = estimate_api_cost(candidate, domain, probe, generations + len(probe), max_new_tokens)
        if estimate > budget_usd:
            score.eligible = False
            score.reason = f"planned synthesis would cost ~${estimate:.2f}, over the ${budget_usd:g} budget"
            score.planned_synthesis_usd = estimate
            return score, None
    result = evaluate(backend, domain, probe, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    per_question = _per_question_cost(candidate, result, server_price_per_hour)
    score.accuracy, score.latency_p50_s, score.latency_p95_s = (
        result.accuracy,
        result.latency_p50_s,
        result.latency_p95_s,
    )
    score.cost_per_1k_questions = per_question * 1000
    score.planned_synthesis_usd = per_question * generations
    if score.planned_synthesis_usd > budget_usd:
        score.eligible = False
        score.reason = f"measured cost puts synthesis at ${score.planned_synthesis_usd:.2f}, over the ${budget_usd:g} budget"
    else:
        score.reason = f"probe accuracy {result.accuracy:.3f} on {result.n} questions"
    return score, result


def _per_question_cost(candidate: ModelCandidate, result: EvalResult, server_price_per_hour: float) -> float:
    """API teachers pay per token; local ones pay for GPU time on the chosen server."""
    if candidate.kind == "openai":
        p_in, p_out = _price_per_token(candidate)
        return (result.prompt_tokens * p_in + result.completion_tokens * p_out) / result.n
    if candidate.kind == "hf":
        return result.seconds / result.n * server_price_per_hour / 3600
    return 0.0  # stored completions were paid for already


def select_teacher(candidates: list[ModelCandidate], backends: dict[str, Backend], domain: Domain,
                   probe: list[Example], budget_usd: float, generations: int, server_memory_gib: float,
                   server_price_per_hour: float, max_new_tokens: int = 256) -> TeacherChoice:  # fmt: skip
    """Probe every candidate; the most accurate eligible one wins (ties: cheaper, then name)."""
    if not candidates:
        return TeacherChoice(
            None, None, [], "no teacher candidates in the spec; add at least one under teachers"
        )
    if not probe:
        raise ValueError("the probe split is empty; raise task.probe_size")
    scored = [score_teacher(c, backends[c.name], domain, probe, budget_usd, generations, server_memory_gib,
                            server_price_per_hour, max_new_tokens) for c in candidates]  # fmt: skip
    eligible = [(s, r) for s, r in scored if s.eligible]
    scores = [s for s, _ in scored]
    if not eligible:
        why = "; ".join(f"{s.name}: {s.reason}" for s in scores)
        return TeacherChoice(None, None, scores, f"no teacher is eligible ({why})")
    best, probe_result = min(
        eligible, key=lambda sr: (-sr[0].accuracy, sr[0].planned_synthesis_usd, sr[0].name)
    )
    reason = (f"{best.name}: highest probe accuracy {best.accuracy:.3f} among {len(eligible)} eligible teacher(s), "
              f"synthesis planned at ${best.planned_synthesis_usd:.2f}")  # fmt: skip
    return TeacherChoice(best.name, best.accuracy, scores, reason, probe_result)


select_teacher_task = task(select_teacher, name="select-teacher", cache_policy=NO_CACHE)
