"""Stage 5, pre-screen students: which fit the server and the latency cap, and which have the capacity to learn.

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

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from stratos import estimates, zoo
from stratos.answers import canonical_completion
from stratos.backends.base import Backend, Messages, SamplingParams
from stratos.domains import get_domain
from stratos.domains.base import Domain, Example
from stratos.estimates import count_params, decode_latency_ms, footprint, load_config
from stratos.evaluation import EvalResult, Match, evaluate
from stratos.jobs import CONTENT, digest
from stratos.ledger import Budget, Entry
from stratos.spec import Constraints, ModelCandidate, StrategySettings, TaskSpec, TrainingSettings
from tasks.build_models import ResolvedModel
from tasks.prepare_data import SplitFile, load_split
from tasks.select_server import ServerRow
from tasks.select_teacher import TeacherChoice
from tasks.synthesize import ACCEPTED, judge


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
    fewshot_accuracy: float  # under task.answer_match
    zeroshot_accuracy: float
    passed: bool
    fewshot_strict: float = 0.0
    fewshot_flexible: float = 0.0
    zeroshot_strict: float = 0.0
    zeroshot_flexible: float = 0.0
    format_warning: str | None = None  # the zero-shot one: how the student answers on its own
    seconds: float = 0.0  # generation time of both prompts, what the pre-screen cost on the server

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

    @property
    def method(self) -> str:
        """How the chosen student will be trained (training.method resolved for it)."""
        return next(f.method for f in self.fits if f.name == self.chosen)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "prescreen": [{**asdict(p), "gain": p.gain, "capacity": p.capacity} for p in self.prescreen],
        }


def training_method(params: int, settings: TrainingSettings, from_scratch: bool = False) -> str:
    """The method training.method resolves to for a student (stratos.estimates.training_method)."""
    return estimates.training_method(params, settings.method, from_scratch)


def student_params(candidate: ModelCandidate) -> int | None:
    """Parameter count from the config, or None for a hub id that cannot be read offline."""
    if not Path(candidate.model).exists():
        return None
    return count_params(load_config(candidate.model))


def check_fit(
    candidate: ModelCandidate,
    server: Mapping[str, Any],
    constraints: Constraints,
    settings: TrainingSettings,
    prompt_tokens: int = 256,
    new_tokens: int = 256,
) -> StudentFit:
    """Does the student fit the server's memory for training and serving, and the latency cap?"""
    if not Path(candidate.model).exists():
        return StudentFit(
            candidate.name,
            None,
            False,
            f"model '{candidate.model}' is not a local path and the hub is offline",
        )
    config = load_config(candidate.model)
    fp = footprint(
        config,
        train_seq_len=settings.max_seq_length,
        train_batch=settings.per_device_train_batch_size,
        lora_r=settings.lora_r,
    )
    method = training_method(fp.params, settings, zoo.from_scratch(candidate.model))
    train_gib = fp.train_full_gib if method in ("full", "grpo") else fp.train_lora_gib
    latency = decode_latency_ms(
        config, server["bandwidth_gbs"], server["tflops"], int(server["gpu_count"]), prompt_tokens, new_tokens
    ) + float(server["latency_ms"])
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


def make_demos(
    teacher: Backend,
    domain: Domain,
    probe: list[Example],
    probe_result: EvalResult | None,
    k: int,
    max_new_tokens: int = 256,
) -> list[tuple[str, str]]:
    """k teacher-written worked examples: its correct probe answers first, then answer-conditioned ones.

    Demos show the canonical format ('#### X' last) whatever the teacher wrote, so a student that
    follows them writes answers the strict reading accepts.
    """
    if k == 0:
        return []
    by_id = {ex.id: ex for ex in probe}
    demos = [
        (
            by_id[r.id].question,
            canonical_completion(r.completion, domain.read(r.completion, by_id[r.id].question)),
        )
        for r in (probe_result.records if probe_result else [])
        if r.correct and r.prediction is not None
    ]
    if len(demos) >= k:
        return demos[:k]
    # A weak teacher solves few questions itself: ask it to derive given answers (as injection does).
    used = {q for q, _ in demos}
    rest = [ex for ex in probe if ex.question not in used][: 4 * k]
    outs = teacher.generate(
        [domain.injection_messages(ex.question, ex.answer) for ex in rest],
        SamplingParams(max_new_tokens=max_new_tokens),
    )
    for ex, out in zip(rest, outs, strict=True):
        judged = judge(domain, ex, out[0].text, "injection")
        if len(demos) < k and judged.verdict == ACCEPTED:
            demos.append((ex.question, judged.completion))
    return demos


class _FewShot:
    """A backend view that prefixes every prompt with the demos (so the harness scores it unchanged)."""

    def __init__(self, inner: Backend, domain: Domain, demos: list[tuple[str, str]]):
        self.inner, self.domain, self.demos = inner, domain, demos
        self.name, self.usage = inner.name, inner.usage

    def generate(self, prompts: list[Messages], params: SamplingParams):
        rewritten = [fewshot_messages(self.domain, self.demos, p[-1]["content"]) for p in prompts]
        return self.inner.generate(rewritten, params)


def prescreen(
    backend: Backend,
    domain: Domain,
    sample: list[Example],
    demos: list[tuple[str, str]],
    max_new_tokens: int = 256,
    match: Match = "flexible",
) -> tuple[EvalResult, EvalResult]:
    """(few-shot, zero-shot) evaluation of a student on `sample`, both readings recorded."""
    params = SamplingParams(max_new_tokens=max_new_tokens)
    fewshot = evaluate(_FewShot(backend, domain, demos), domain, sample, params, match=match)
    zeroshot = evaluate(backend, domain, sample, params, match=match)
    return fewshot, zeroshot


def prescreen_result(
    fit: StudentFit, fewshot: EvalResult, zeroshot: EvalResult, threshold: float
) -> PrescreenResult:
    return PrescreenResult(
        fit.name,
        fit.params,
        fewshot.accuracy,
        zeroshot.accuracy,
        passed=max(fewshot.accuracy, zeroshot.accuracy) >= threshold,
        fewshot_strict=fewshot.strict_accuracy,
        fewshot_flexible=fewshot.flexible_accuracy,
        zeroshot_strict=zeroshot.strict_accuracy,
        zeroshot_flexible=zeroshot.flexible_accuracy,
        format_warning=zeroshot.format_warning,
        seconds=fewshot.seconds + zeroshot.seconds,
    )


def select_student(
    candidates: list[ModelCandidate],
    backends: dict[str, Backend],
    domain: Domain,
    server: Mapping[str, Any],
    constraints: Constraints,
    settings: TrainingSettings,
    sample: list[Example],
    demos: list[tuple[str, str]],
    threshold: float,
    max_new_tokens: int = 256,
    match: Match = "flexible",
) -> StudentChoice:
    """Fit every candidate, pre-screen those that fit, and pick the smallest that passes."""
    fits = [check_fit(c, server, constraints, settings) for c in candidates]
    fitting = [f for f in fits if f.fits]
    if not fitting:
        why = "; ".join(f"{f.name}: {f.reason}" for f in fits) or "no student candidates in the spec"
        return StudentChoice(None, fits, [], f"no student fits ({why})")
    results = []
    for f in sorted(fitting, key=lambda f: (f.params or 0, f.name)):
        few, zero = prescreen(backends[f.name], domain, sample, demos, max_new_tokens, match)
        results.append(prescreen_result(f, few, zero, threshold))
    passing = [r for r in results if r.passed]
    if not passing:
        best = max(results, key=lambda r: r.capacity)
        return StudentChoice(
            None,
            fits,
            results,
            f"no student reaches pre-screen threshold {threshold:g} "
            f"(best: {best.name} at {best.capacity:.3f})",
        )
    chosen = passing[0]
    reason = (
        f"{chosen.name}: smallest student passing pre-screen ({chosen.fewshot_accuracy:.3f} few-shot, "
        f"{chosen.zeroshot_accuracy:.3f} zero-shot, threshold {threshold:g})"
    )
    return StudentChoice(chosen.name, fits, results, reason)


# The training settings a student's fit depends on; a new learning rate must not re-run the pre-screen.
FIT_FIELDS = {"method", "max_seq_length", "per_device_train_batch_size", "lora_r"}


def fit_settings(training: TrainingSettings) -> TrainingSettings:
    """Only what fit depends on, the rest at defaults: the pre-screen's cache key ignores the others."""
    return TrainingSettings(**training.model_dump(include=FIT_FIELDS))


def fit_constraints(constraints: Constraints) -> Constraints:
    """Only the limits a student's fit checks (size and latency): a new budget does not re-run the pre-screen."""
    return Constraints(
        max_student_params=constraints.max_student_params, max_latency_ms=constraints.max_latency_ms
    )


@task(
    name="prescreen-students", task_run_name="prescreen-students", cache_policy=CONTENT, persist_result=True
)
def prescreen_students(
    students: list[ResolvedModel],
    teacher: ResolvedModel,
    teacher_choice: TeacherChoice,
    task: TaskSpec,
    probe: SplitFile,
    server: ServerRow,
    constraints: Constraints,
    training: TrainingSettings,
    strategy: StrategySettings,
    budget: Budget | None = None,
) -> StudentChoice:
    """Fit every student to the server and pre-screen those that fit with teacher-written demos."""
    domain = get_domain(task)
    examples = load_split(probe)
    demos = make_demos(
        teacher.backend(),
        domain,
        examples,
        teacher_choice.probe,
        strategy.prescreen_demos,
        strategy.max_new_tokens,
    )
    choice = select_student(
        [s.candidate for s in students],
        {s.name: s.backend() for s in students},
        domain,
        server.model_dump(),
        constraints,
        training,
        examples[: strategy.prescreen_size],
        demos,
        strategy.prescreen_threshold,
        strategy.max_new_tokens,
        task.answer_match,
    )
    if budget is not None:
        ledger, sha = budget.ledger(), {s.name: s.sha256 for s in students}
        for r in choice.prescreen:
            entry = Entry(
                id=f"prescreen:{digest(sha[r.name], probe.sha256, strategy.model_dump(mode='json'))}",
                stage="prescreen",
                item=f"{r.name} on {min(strategy.prescreen_size, len(examples))} questions, two prompts",
                usd=budget.gpu_usd(r.seconds),
                basis=budget.gpu_basis,
                note=budget.gpu_note(),
                seconds=r.seconds,
            )
            ledger.charge(entry)
    return choice
