"""Stage 4, select teacher: the most accurate teacher on a probe of the task, within the budget.

Every candidate (a local model, an OpenAI-compatible endpoint, or stored
completions) is scored on the same probe questions with the evaluation
harness: accuracy, latency, and dollars per 1k questions. A local teacher must
fit the chosen server's GPU memory; an API teacher's planned synthesis
(training questions x samples) must fit the budget, estimated before the probe
from prompt length and the generation cap, and again after it from measured
token counts. The most accurate eligible teacher wins; ties go to the cheaper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task

from stratos.backends.base import Backend, SamplingParams
from stratos.domains import get_domain
from stratos.domains.base import Domain, Example
from stratos.estimates import footprint, load_config
from stratos.evaluation import EvalResult, Match, evaluate
from stratos.jobs import CONTENT, digest
from stratos.ledger import Budget, spend_entry
from stratos.spec import ModelCandidate, StrategySettings, TaskSpec
from stratos.storage import StorageError, from_uri
from tasks.build_models import ResolvedModel
from tasks.prepare_data import SplitFile, load_split
from tasks.select_server import ServerRow

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
    strict_accuracy: float | None = None
    flexible_accuracy: float | None = None
    format_warning: str | None = None
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


def estimate_api_cost(
    candidate: ModelCandidate, domain: Domain, probe: list[Example], generations: int, max_new_tokens: int
) -> float:
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


def score_teacher(
    candidate: ModelCandidate,
    backend: Backend,
    domain: Domain,
    probe: list[Example],
    budget_usd: float,
    generations: int,
    server_memory_gib: float,
    server_price_per_hour: float,
    max_new_tokens: int = 256,
    match: Match = "flexible",
    probe_fn: ProbeFn | None = None,
) -> tuple[TeacherScore, EvalResult | None]:
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
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    result = (probe_fn or _evaluate)(candidate, backend, domain, probe, params, match)
    score.strict_accuracy, score.flexible_accuracy = result.strict_accuracy, result.flexible_accuracy
    score.format_warning = result.format_warning
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


ProbeFn = Callable[[ModelCandidate, Backend, Domain, list[Example], SamplingParams, Match], EvalResult]


def _evaluate(
    candidate: ModelCandidate,
    backend: Backend,
    domain: Domain,
    probe: list[Example],
    params: SamplingParams,
    match: Match,
) -> EvalResult:
    return evaluate(backend, domain, probe, params, match=match)


def _per_question_cost(candidate: ModelCandidate, result: EvalResult, server_price_per_hour: float) -> float:
    """API teachers pay per token; local ones pay for GPU time on the chosen server."""
    if candidate.kind == "openai":
        p_in, p_out = _price_per_token(candidate)
        return (result.prompt_tokens * p_in + result.completion_tokens * p_out) / result.n
    if candidate.kind == "hf":
        return result.seconds / result.n * server_price_per_hour / 3600
    return 0.0  # stored completions were paid for already


def select_teacher(
    candidates: list[ModelCandidate],
    backends: dict[str, Backend],
    domain: Domain,
    probe: list[Example],
    budget_usd: float,
    generations: int,
    server_memory_gib: float,
    server_price_per_hour: float,
    max_new_tokens: int = 256,
    match: Match = "flexible",
    probe_fn: ProbeFn | None = None,
) -> TeacherChoice:
    """Probe every candidate; the most accurate eligible one wins (ties: cheaper, then name)."""
    if not candidates:
        return TeacherChoice(
            None, None, [], "no teacher candidates in the spec; add at least one under teachers"
        )
    if not probe:
        raise ValueError("the probe split is empty; raise task.probe_size")
    scored = [
        score_teacher(
            c,
            backends[c.name],
            domain,
            probe,
            budget_usd,
            generations,
            server_memory_gib,
            server_price_per_hour,
            max_new_tokens,
            match,
            probe_fn,
        )
        for c in candidates
    ]
    eligible = [(s, r) for s, r in scored if s.eligible]
    scores = [s for s, _ in scored]
    if not eligible:
        why = "; ".join(f"{s.name}: {s.reason}" for s in scores)
        return TeacherChoice(None, None, scores, f"no teacher is eligible ({why})")
    best, probe_result = min(
        eligible, key=lambda sr: (-sr[0].accuracy, sr[0].planned_synthesis_usd, sr[0].name)
    )
    reason = (
        f"{best.name}: highest probe accuracy {best.accuracy:.3f} among {len(eligible)} eligible teacher(s), "
        f"synthesis planned at ${best.planned_synthesis_usd:.2f}"
    )
    return TeacherChoice(best.name, best.accuracy, scores, reason, probe_result)


class ProbeMemo:
    """Probe answers kept in the artifact store by teacher and probe content, and charged once.

    A re-run whose inputs changed in ways that do not touch a teacher's probe (a higher budget,
    another server) reads the answers back instead of asking (and paying) the teacher again.
    """

    def __init__(
        self, teachers: list[ResolvedModel], probe: SplitFile, store_uri: str, budget: Budget | None
    ):
        self.sha = {t.name: t.sha256 for t in teachers}
        self.probe, self.store, self.budget = probe, from_uri(store_uri), budget

    def __call__(self, candidate, backend, domain, examples, params, match) -> EvalResult:
        key = (
            f"probes/{digest(self.sha[candidate.name], self.probe.sha256, params.max_new_tokens, match)}.json"
        )
        try:
            result = EvalResult.from_dict(self.store.get_json(key))
        except (FileNotFoundError, KeyError, StorageError):
            result = evaluate(backend, domain, examples, params, match=match)
            self.store.put_json(key, result.to_dict())
        if self.budget is not None:
            entry = spend_entry(
                f"probe:{key}",
                "probe",
                f"{candidate.name} on {result.n} questions",
                candidate.kind,
                result,
                self.budget,
            )
            self.budget.ledger().charge(entry)
        return result


@task(name="select-teacher", task_run_name="select-teacher", cache_policy=CONTENT, persist_result=True)
def probe_teachers(
    teachers: list[ResolvedModel],
    task: TaskSpec,
    probe: SplitFile,
    server: ServerRow,
    budget_usd: float,
    strategy: StrategySettings,
    store_uri: str,
    budget: Budget | None = None,
) -> TeacherChoice:
    """Probe every teacher on the probe split; the most accurate one that fits server and budget wins.

    Probe answers are kept in the store (ProbeMemo), so they are asked for and charged once.
    """
    generations = planned_questions(task.train_size, strategy.num_samples, strategy.max_attempts)
    return select_teacher(
        [t.candidate for t in teachers],
        {t.name: t.backend() for t in teachers},
        get_domain(task),
        load_split(probe),
        budget_usd,
        generations,
        server.total_gpu_memory_gb,
        server.cost_per_hour,
        strategy.max_new_tokens,
        task.answer_match,
        ProbeMemo(teachers, probe, store_uri, budget),
    )
