"""Evaluation: score any backend (teacher, student, served endpoint) on a split of a domain.

One harness for every comparison Stratos reports, so teacher and student
numbers are measured the same way: accuracy from the domain's answer reading
and scorer, per-request latency p50/p95 from the backend's completions, generated
tokens per second over the harness's own wall clock, and dollars from the
backend's usage account (API prices for endpoints, GPU hours for local models).

Answers are read as harnesses read them (stratos.answers): `strict_accuracy`
counts only the canonical `#### X` line, `flexible_accuracy` every rule, and
`accuracy` is the one `match` names (task.answer_match; flexible by default).
When most completions miss the strict format the result carries a
`format_warning` that names the model, the share, an example and what was done
about it, and the harness logs it: a model is never silently scored 0.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from stratos.backends.base import Backend, Completion, SamplingParams, Usage
from stratos.domains.base import Domain, Example
from stratos.progress import StageProgress

log = logging.getLogger(__name__)

Match = Literal["flexible", "strict"]
# Share of completions without the strict format at which a result carries a warning.
FORMAT_WARNING_SHARE = 0.5


@dataclass
class ExampleRecord:
    """How the backend did on one question."""

    id: str
    prediction: str | None  # the answer read by the first rule that found one (flexible)
    gold: str
    correct: bool  # under the result's `match`
    completion: str
    latency_s: float
    completion_tokens: int
    rule: str | None = None  # which rule of stratos.answers read the answer; None: no answer found
    strict_correct: bool = False
    flexible_correct: bool = False


@dataclass
class EvalResult:
    """Scores of one backend on one split; `records` hold the per-question detail."""

    backend: str
    domain: str
    n: int
    correct: int
    accuracy: float  # under `match`
    latency_p50_s: float
    latency_p95_s: float
    tokens_per_second: float
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of all generate() calls
    records: list[ExampleRecord] = field(default_factory=list)
    match: Match = "flexible"
    strict_accuracy: float = 0.0
    flexible_accuracy: float = 0.0
    rules: dict[str, int] = field(default_factory=dict)  # rule -> completions it read ("none": no answer)
    format_warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        records = [ExampleRecord(**r) for r in data.get("records", [])]
        return cls(**{**data, "records": records})


def evaluate(
    backend: Backend,
    domain: Domain,
    examples: list[Example],
    params: SamplingParams | None = None,
    batch_size: int = 32,
    match: Match = "flexible",
) -> EvalResult:
    """Generate one completion per example (greedy unless `params` says otherwise) and score it.

    `match` chooses which reading `accuracy` and each record's `correct` use; both are recorded.
    """
    if not examples:
        raise ValueError("evaluate() got no examples; pass a non-empty split")
    params = params or SamplingParams(temperature=0.0)
    if params.n != 1:
        raise ValueError(f"params.n = {params.n}: evaluation scores one completion per question; use n=1")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    before = replace(backend.usage)
    records: list[ExampleRecord] = []
    seconds = 0.0
    progress = StageProgress(f"evaluation of {backend.name}", len(examples), "evaluation-progress", log)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        began = time.perf_counter()
        outputs = backend.generate([domain.messages(ex.question) for ex in batch], params)
        seconds += time.perf_counter() - began
        records += [
            score_completion(domain, ex, samples[0], match)
            for ex, samples in zip(batch, outputs, strict=True)
        ]
        progress.update(len(records), final=len(records) == len(examples))
    result = _summarise(backend.name, domain.name, records, seconds, before, backend.usage, match)
    if result.format_warning:
        log.warning(result.format_warning)
    return result


def score_completion(domain: Domain, example: Example, completion: Completion, match: Match) -> ExampleRecord:
    """One completion read by every rule and scored both ways."""
    reading = domain.read(completion.text, example.question)
    flexible = bool(domain.score(reading.answer, example.answer))
    strict = reading.strict and flexible
    return ExampleRecord(
        id=example.id,
        prediction=reading.answer,
        gold=example.answer,
        correct=strict if match == "strict" else flexible,
        completion=completion.text,
        latency_s=completion.latency_s,
        completion_tokens=completion.completion_tokens,
        rule=reading.rule,
        strict_correct=strict,
        flexible_correct=flexible,
    )


def format_warning(name: str, records: list[ExampleRecord], match: Match) -> str | None:
    """A warning when most completions lack the strict format: who, how many, an example, what was done."""
    missing = [r for r in records if r.rule != "strict"]
    share = len(missing) / len(records)
    if share < FORMAT_WARNING_SHARE:
        return None
    strict = sum(r.strict_correct for r in records) / len(records)
    flexible = sum(r.flexible_correct for r in records) / len(records)
    rules = Counter(r.rule or "none" for r in missing)
    how = ", ".join(f"{rule} {count}" for rule, count in rules.most_common())
    flat = " ".join(missing[0].completion.split())
    example = flat if len(flat) <= 120 else "..." + flat[-117:]  # how it ends: that is where the format is
    if match == "strict":
        action = (
            f"task.answer_match is 'strict', so they count as wrong (strict accuracy {strict:.1%}); "
            f"read flexibly they would score {flexible:.1%}: set task.answer_match: flexible to use that"
        )
    else:
        action = (
            f"Stratos scores them with the flexible rules ({how}): flexible accuracy {flexible:.1%}, "
            f"strict {strict:.1%}; any trace kept for training is rewritten to the '#### <answer>' format"
        )
    return (
        f"model '{name}': {share:.0%} of {len(records)} completions have no '#### <answer>' line "
        f"(e.g. {example!r}); {action}"
    )


def _summarise(
    backend_name: str,
    domain_name: str,
    records: list[ExampleRecord],
    seconds: float,
    before: Usage,
    after: Usage,
    match: Match,
) -> EvalResult:
    latencies = np.array([r.latency_s for r in records])
    correct = sum(r.correct for r in records)
    n = len(records)
    completion_tokens = after.completion_tokens - before.completion_tokens
    return EvalResult(
        backend=backend_name,
        domain=domain_name,
        n=len(records),
        correct=correct,
        accuracy=correct / len(records),
        latency_p50_s=float(np.percentile(latencies, 50)),
        latency_p95_s=float(np.percentile(latencies, 95)),
        tokens_per_second=completion_tokens / seconds if seconds > 0 else 0.0,
        cost_usd=after.cost_usd - before.cost_usd,
        prompt_tokens=after.prompt_tokens - before.prompt_tokens,
        completion_tokens=completion_tokens,
        seconds=seconds,
        records=records,
        match=match,
        strict_accuracy=sum(r.strict_correct for r in records) / n,
        flexible_accuracy=sum(r.flexible_correct for r in records) / n,
        rules=dict(Counter(r.rule or "none" for r in records)),
        format_warning=format_warning(backend_name, records, match),
    )
