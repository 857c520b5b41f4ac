"""Evaluation: score any backend (teacher, student, served endpoint) on a split of a domain.

One harness for every comparison Stratos reports, so teacher and student
numbers are measured the same way: accuracy from the domain's extractor and
scorer, per-request latency p50/p95 from the backend's completions, generated
tokens per second over the harness's own wall clock, and dollars from the
backend's usage account (API prices for endpoints, GPU hours for local models).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stratos.backends.base import Backend, Completion, SamplingParams, Usage
from stratos.domains.base import Domain, Example
from stratos.files import write_text_atomic


@dataclass
class ExampleRecord:
    """How the backend did on one question."""

    id: str
    prediction: str | None
    gold: str
    correct: bool
    completion: str
    latency_s: float
    completion_tokens: int


@dataclass
class EvalResult:
    """Scores of one backend on one split; `records` hold the per-question detail."""

    backend: str
    domain: str
    n: int
    correct: int
    accuracy: float
    latency_p50_s: float
    latency_p95_s: float
    tokens_per_second: float
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of all generate() calls
    records: list[ExampleRecord] = field(default_factory=list)

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
) -> EvalResult:
    """Generate one completion per example (greedy unless `params` says otherwise) and score it."""
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
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        began = time.perf_counter()
        outputs = backend.generate([domain.messages(ex.question) for ex in batch], params)
        seconds += time.perf_counter() - began
        records += [_score(domain, ex, samples[0]) for ex, samples in zip(batch, outputs, strict=True)]
    return _summarise(backend.name, domain.name, records, seconds, before, backend.usage)


def _score(domain: Domain, example: Example, completion: Completion) -> ExampleRecord:
    prediction = domain.extract(completion.text)
    return ExampleRecord(
        id=example.id,
        prediction=prediction,
        gold=example.answer,
        correct=bool(domain.score(prediction, example.answer)),
        completion=completion.text,
        latency_s=completion.latency_s,
        completion_tokens=completion.completion_tokens,
    )


def _summarise(
    backend_name: str,
    domain_name: str,
    records: list[ExampleRecord],
    seconds: float,
    before: Usage,
    after: Usage,
) -> EvalResult:
    latencies = np.array([r.latency_s for r in records])
    correct = sum(r.correct for r in records)
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
    )


def results_table(results: dict[str, EvalResult]) -> str:
    """A markdown table, one row per evaluated backend."""
    lines = [
        "| model | n | accuracy | p50 latency (ms) | p95 latency (ms) | tokens/s | cost ($) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r.n} | {r.accuracy:.1%} | {r.latency_p50_s * 1000:.1f} | "
            f"{r.latency_p95_s * 1000:.1f} | {r.tokens_per_second:.1f} | {r.cost_usd:.4f} |"
        )
    return "\n".join(lines)


def write_results(results: dict[str, EvalResult], path: str | Path) -> Path:
    """Write results as JSON via a temporary file, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps({k: r.to_dict() for k, r in results.items()}, indent=2))


def read_results(path: str | Path) -> dict[str, EvalResult]:
    """Results written by `write_results`."""
    data = json.loads(Path(path).read_text())
    return {k: EvalResult.from_dict(v) for k, v in data.items()}


# Backends hold models and connections, which Prefect cannot hash into a cache key.
evaluate_task = task(evaluate, name="evaluate", cache_policy=NO_CACHE, persist_result=False)
