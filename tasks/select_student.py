"""Stage 3: which students fit the server and the latency cap, and which have the capacity to learn.

Fit is decided from each candidate's config alone (stratos.estimates): training
memory for the method that would be used, serving memory, and a roofline
estimate of request latency on the chosen server's GPUs plus the network round
trip. Candidates that do not fit are dropped with the reason.

The capacity pre-screen prompts each remaining student with teacher-written
worked examples (few-shot chain of thought) on a small sample of probe
questions, and measures accuracy and its gain over the same prompt without the
examples (zero-shot). A student's capacity is its better-prompted accuracy of the
two: models that read demonstrations gain from them, but a model never trained on
multi-turn prompts can have the capacity and still be thrown by the demo turns
(the zoo's strong arithmetic model: 100% zero-shot, 0% with two demos). Students
whose capacity is below `prescreen_threshold` are dropped; of the rest, the
smallest wins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from stratos.backends.base import Backend, Messages, SamplingParams
from stratos.domains.base import Domain, Example
from stratos.estimates import count_params, decode_latency_ms, footprint, load_config
from stratos.spec import Constraints, ModelCandidate, TrainingSettings
from tasks.evaluate import EvalResult, evaluate
from tasks.synthesize import ACCEPTED, verdict

# Students at or below this size are fully fine-tuned under training.method "auto":
# full fine-tuning fits easily and LoRA on a small or random base learns little.
FULL_FINETUNE_MAX_PARAMS = 200_000_000


@dataclass
class StudentFit:
    name: str
    params: int | None
    fits: bool
    reason: str
    method: str = ""
    train_gib: float | None = None
    serve_gib: float | None = None
    latency_ms: float | None = None


@dataclass
class PrescreenResult:
    name: str
    params: int | None
    fewshot_accuracy: float
    zeroshot_accuracy: float
    passed: bool

    @property
    def gain(self) -> float:
        return self.fewshot_accuracy - self.zeroshot_accuracy

    @property
    def capacity(self) -> float:
        """Accuracy under the better of the two prompts: what the pre-screen compares to the threshold."""
        return max(self.fewshot_accuracy, self.zeroshot_accuracy)


@dataclass
class StudentChoice:
    chosen: str | None
    fits: list[StudentFit]
    prescreen: list[PrescreenResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "prescreen": [{**asdict(p), "gain": p.gain, "capacity": p.capacity} for p in self.prescreen],
        }


def training_method(params: int, settings: TrainingSettings) -> str:
    """The method `auto` resolves to for a student of `params` parameters."""
    if settings.method != "auto":
        return settings.method
    return "full" if params <= FULL_FINETUNE_MAX_PARAMS else "lora"


def student_params(candidate: ModelCandidate) -> int | None:
    """Parameter count from the config, or None for a hub id that cannot be read offline."""
    if not Path(candidate.model).exists():
        return None
    return count_params(load_config(candidate.model))


def check_fit(candidate: ModelCandidate, server: pd.Series, constraints: Constraints,
              settings: TrainingSettings, prompt_tokens: int = 256, new_tokens: int = 256) -> StudentFit:  # fmt: skip
    """Does the student fit the server's memory for training and serving, and the latency cap?"""
    if not Path(candidate.model).exists():
        return StudentFit(
            candidate.name,
            None,
            False,
            f"model '{candidate.model}' is not a local path and the hub is offline",
        )
    config = load_config(candidate.model)
    fp = footprint(config, train_seq_len=settings.max_seq_length, train_batch=settings.per_device_train_batch_size,
                   lora_r=settings.lora_r)  # fmt: skip
    method = training_method(fp.params, settings)
    train_gib = fp.train_full_gib if method in ("full", "grpo") else fp.train_lora_gib
    latency = decode_latency_ms(config, server["bandwidth_gbs"], server["tflops"], int(server["gpu_count"]),
                                prompt_tokens, new_tokens) + float(server["latency_ms"])  # fmt: skip
    fit = StudentFit(candidate.name, fp.params, True, "", method, train_gib, fp.serve_gib, latency)
    memory = float(server["total_gpu_memory_gb"])
    cap = constraints.max_student_params
    if cap is not None and fp.params > cap:
        fit.fits, fit.reason = (
            False,
            f"{fp.params:,} parameters, above constraints.max_student_params {cap:,}",
        )
    elif train_gib > memory:
        fit.fits, fit.reason = (
            False,
            f"{method} training needs ~{train_gib:.1f} GiB but the server has {memory:.0f} GiB",
        )
    elif latency > constraints.max_latency_ms:
        fit.fits, fit.reason = (
            False,
            f"estimated request latency {latency:.0f} ms exceeds {constraints.max_latency_ms:g} ms",
        )
    else:
        fit.reason = f"{method}: ~{train_gib:.2f} GiB to train, ~{latency:.0f} ms per request"
    return fit


def fewshot_messages(domain: Domain, demos: list[tuple[str, str]], question: str) -> Messages:
    """The domain's prompt with worked (question, completion) pairs as earlier conversation turns."""
    messages = domain.messages(question)
    turns = [
        t for q, c in demos for t in ({"role": "user", "content": q}, {"role": "assistant", "content": c})
    ]
    return messages[:-1] + turns + messages[-1:]


def make_demos(teacher: Backend, domain: Domain, probe: list[Example], probe_result: EvalResult | None,
               k: int, max_new_tokens: int = 256) -> list[tuple[str, str]]:  # fmt: skip
    """k teacher-written worked examples: its correct probe answers first, then answer-conditioned ones."""
    if k == 0:
        return []
    by_id = {ex.id: ex for ex in probe}
    demos = [
        (by_id[r.id].question, r.completion)
        for r in (probe_result.records if probe_result else [])
        if r.correct
    ]
    if len(demos) >= k:
        return demos[:k]
    # A weak teacher solves few questions itself: ask it to derive given answers (as injection does).
    used = {q for q, _ in demos}
    rest = [ex for ex in probe if ex.question not in used][: 4 * k]
    outs = teacher.generate([domain.injection_messages(ex.question, ex.answer) for ex in rest],
                            SamplingParams(max_new_tokens=max_new_tokens))  # fmt: skip
    for ex, out in zip(rest, outs, strict=True):
        if len(demos) < k and verdict(domain, ex, out[0].text, "injection") == ACCEPTED:
            demos.append((ex.question, out[0].text))
    return demos


class _FewShot:
    """A backend view that prefixes every prompt with the demos (so the harness scores it unchanged)."""

    def __init__(self, inner: Backend, domain: Domain, demos: list[tuple[str, str]]):
        self.inner, self.domain, self.demos = inner, domain, demos
        self.name, self.usage = inner.name, inner.usage

    def generate(self, prompts: list[Messages], params: SamplingParams):
        rewritten = [fewshot_messages(self.domain, self.demos, p[-1]["content"]) for p in prompts]
        return self.inner.generate(rewritten, params)


def prescreen(backend: Backend, domain: Domain, sample: list[Example], demos: list[tuple[str, str]],
              max_new_tokens: int = 256) -> tuple[float, float]:  # fmt: skip
    """(few-shot accuracy, zero-shot accuracy) of a student on `sample`."""
    params = SamplingParams(max_new_tokens=max_new_tokens)
    fewshot = evaluate(_FewShot(backend, domain, demos), domain, sample, params).accuracy
    zeroshot = evaluate(backend, domain, sample, params).accuracy
    return fewshot, zeroshot


def select_student(candidates: list[ModelCandidate], backends: dict[str, Backend], domain: Domain,
                   server: pd.Series, constraints: Constraints, settings: TrainingSettings,
                   sample: list[Example], demos: list[tuple[str, str]], threshold: float,
                   max_new_tokens: int = 256) -> StudentChoice:  # fmt: skip
    """Fit every candidate, pre-screen those that fit, and pick the smallest that passes."""
    fits = [check_fit(c, server, constraints, settings) for c in candidates]
    fitting = [f for f in fits if f.fits]
    if not fitting:
        why = "; ".join(f"{f.name}: {f.reason}" for f in fits) or "no student candidates in the spec"
        return StudentChoice(None, fits, [], f"no student fits ({why})")
    results = []
    for f in sorted(fitting, key=lambda f: (f.params or 0, f.name)):
        few, zero = prescreen(backends[f.name], domain, sample, demos, max_new_tokens)
        results.append(PrescreenResult(f.name, f.params, few, zero, passed=max(few, zero) >= threshold))
    passing = [r for r in results if r.passed]
    if not passing:
        best = max(results, key=lambda r: r.capacity)
        return StudentChoice(None, fits, results, f"no student reaches pre-screen threshold {threshold:g} "
                             f"(best: {best.name} at {best.capacity:.3f})")  # fmt: skip
    chosen = passing[0]
    reason = (f"{chosen.name}: smallest student passing pre-screen ({chosen.fewshot_accuracy:.3f} few-shot, "
              f"{chosen.zeroshot_accuracy:.3f} zero-shot, threshold {threshold:g})")  # fmt: skip
    return StudentChoice(chosen.name, fits, results, reason)


select_student_task = task(select_student, name="select-student", cache_policy=NO_CACHE)
