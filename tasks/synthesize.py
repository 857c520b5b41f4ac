"""Stages 6 and 7, choose strategy and synthesize: the distillation mode, then the student's training data.

Dual mode, decided by how well the teacher solves the task on its own (its
probe accuracy against τ):

- Knowledge Alignment (accuracy >= τ): the teacher solves each training
  question, `num_samples` times; a trace is kept when its answer matches the
  gold answer and the domain verifier accepts its reasoning.
- Knowledge Injection (accuracy < τ): the teacher is shown the question *and*
  the gold answer and writes reasoning that derives it (reverse synthesis); it
  is retried up to `max_attempts` times per question until a trace ends in the
  gold answer, passes the verifier and does not merely restate the answer.

Either way the student is trained on the *forward* prompt (question only) with
the kept trace as the completion. Every sample gets a verdict; accepted,
de-duplicated samples become `train.parquet`, and `samples.parquet` keeps all
of them with their verdicts. Generation is resumable: each finished question
is appended to `attempts.jsonl`, and a re-run skips what is there.

A teacher's answer is read the way evaluation reads it (stratos.answers: the
'#### X' line first, then "The answer is X", \\boxed{X}, ... as task.answer_match
allows), and every kept trace is rewritten to the canonical format -- reasoning,
then '#### X' -- so the student learns one format whatever the teacher wrote. The
teacher's own text stays in `raw_completion`, with the rule that read it in
`answer_rule`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import datasets
from prefect import task
from pydantic import BaseModel, Field

from stratos.answers import canonical_completion
from stratos.backends.base import Backend, Messages, SamplingParams, Usage
from stratos.domains import get_domain
from stratos.domains.base import ANSWER_MARK, Domain, Example
from stratos.evaluation import Match
from stratos.files import content_digest, write_json_atomic, write_text_atomic
from stratos.jobs import CONTENT, Ran, Runner, StageJob, digest, dispatched, locked_work_dir, transient
from stratos.ledger import Budget, Entry
from stratos.progress import StageProgress
from stratos.spec import StrategySettings, TaskSpec
from stratos.storage import from_uri
from tasks.build_models import ResolvedModel
from tasks.prepare_data import SplitFile, load_split, write_parquet

Mode = Literal["alignment", "injection"]
ACCEPTED = "accepted"
CHUNK = 32  # questions per generate() call; also the resume granularity
PROGRESS_EVERY_S = 15.0  # seconds between progress lines
log = logging.getLogger(__name__)
SAMPLE_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "gold": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "teacher": datasets.Value("string"),
        "mode": datasets.Value("string"),
        "sample_index": datasets.Value("int32"),
        "verdict": datasets.Value("string"),
        "raw_completion": datasets.Value("string"),  # the teacher's text as written
        "answer_rule": datasets.Value("string"),  # the stratos.answers rule that read its answer
    }
)


@dataclass
class SynthesisReport:
    """What synthesis produced and what it cost."""

    mode: Mode
    teacher: str
    questions: int
    samples: int
    accepted: int  # after de-duplication
    questions_covered: int  # questions with at least one accepted trace
    verdicts: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    resumed_questions: int = 0
    train_path: str = ""
    samples_path: str = ""

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.samples if self.samples else 0.0

    @property
    def coverage(self) -> float:
        return self.questions_covered / self.questions if self.questions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "acceptance_rate": self.acceptance_rate, "coverage": self.coverage}


@dataclass
class _Question:
    example: Example
    samples: list[dict[str, Any]] = field(default_factory=list)


def choose_mode(teacher_accuracy: float, tau: float, force: Mode | None = None) -> tuple[Mode, str]:
    """Alignment when the teacher is good enough on its own, else injection; `force` wins (ablations)."""
    if force:
        return (
            force,
            f"mode forced to {force} by strategy.force_mode (teacher probe accuracy {teacher_accuracy:.3f})",
        )
    if teacher_accuracy >= tau:
        return "alignment", f"teacher probe accuracy {teacher_accuracy:.3f} >= τ {tau:g}: Knowledge Alignment"
    return "injection", f"teacher probe accuracy {teacher_accuracy:.3f} < τ {tau:g}: Knowledge Injection"


def restates_answer(rationale: str, answer: str) -> bool:
    """True when reasoning leads with the answer instead of deriving it, or has nothing but the answer."""
    lines = [line.strip() for line in rationale.strip().splitlines() if line.strip()]
    if not lines:
        return True
    first = lines[0].lower()
    said = re.escape(answer.strip().lower())
    if first == answer.strip().lower() or re.search(rf"(answer|result)\s*(is|:|=)\s*{said}\b", first):
        return True
    return len(re.sub(re.escape(answer.strip()), "", rationale).strip()) < 3


@dataclass(frozen=True)
class Judged:
    """One sample's fate, the rule that read its answer, and its text in the canonical format."""

    verdict: str  # accepted, or the first check it failed
    rule: str | None
    completion: str  # canonical ('#### X' last) when an answer was read, else the text as written


def judge(domain: Domain, example: Example, text: str, mode: Mode, match: Match = "flexible") -> Judged:
    """Read the answer, rewrite to the canonical format, then check answer, reasoning and restating."""
    reading = domain.read(text, example.question)
    if reading.answer is None or (match == "strict" and not reading.strict):
        return Judged("no_answer", reading.rule, text)
    canonical = canonical_completion(text, reading)
    if not domain.score(reading.answer, example.answer):
        return Judged("wrong_answer", reading.rule, canonical)
    if not domain.verify(example, canonical):
        return Judged("failed_verifier", reading.rule, canonical)
    rationale = canonical.rsplit(ANSWER_MARK, 1)[0]
    if mode == "injection" and restates_answer(rationale, example.answer):
        return Judged("restates_answer", reading.rule, canonical)
    return Judged(ACCEPTED, reading.rule, canonical)


def verdict(domain: Domain, example: Example, text: str, mode: Mode, match: Match = "flexible") -> str:
    """The verdict alone (see `judge`)."""
    return judge(domain, example, text, mode, match).verdict


def _prompt(domain: Domain, example: Example, mode: Mode) -> Messages:
    if mode == "injection":
        return domain.injection_messages(example.question, example.answer)
    return domain.messages(example.question)


def _load_done(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Questions already finished by an earlier (possibly interrupted) run."""
    done: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut off by the interruption: that question is redone
        done[record["question_id"]] = record["samples"]
    return done


def _generate_round(
    backend: Backend,
    domain: Domain,
    pending: list[_Question],
    mode: Mode,
    params: SamplingParams,
    match: Match,
) -> None:
    """One round of `params.n` samples for each pending question, judged on arrival."""
    outputs = backend.generate([_prompt(domain, q.example, mode) for q in pending], params)
    for q, completions in zip(pending, outputs, strict=True):
        for c in completions:
            judged = judge(domain, q.example, c.text, mode, match)
            q.samples.append(
                {
                    "index": len(q.samples),
                    "text": c.text,
                    "verdict": judged.verdict,
                    "rule": judged.rule,
                    "completion": judged.completion,
                }
            )


def _synthesize_chunk(
    backend: Backend,
    domain: Domain,
    chunk: list[Example],
    mode: Mode,
    params: SamplingParams,
    max_attempts: int,
    match: Match,
) -> list[_Question]:
    """Alignment: one round of n samples. Injection: rounds until a sample is accepted or attempts run out."""
    questions = [_Question(ex) for ex in chunk]
    rounds = 1 if mode == "alignment" else max(1, -(-max_attempts // params.n))
    for r in range(rounds):
        pending = [q for q in questions if not any(s["verdict"] == ACCEPTED for s in q.samples)]
        if not pending:
            break
        _generate_round(
            backend,
            domain,
            pending,
            mode,
            replace(params, seed=None if params.seed is None else params.seed + r),
            match,
        )
    return questions


def synthesize(
    backend: Backend,
    domain: Domain,
    examples: list[Example],
    mode: Mode,
    out_dir: str | Path,
    num_samples: int = 4,
    max_attempts: int = 8,
    temperature: float = 0.8,
    max_new_tokens: int = 256,
    seed: int = 0,
    match: Match = "flexible",
    spend: ChunkSpend | None = None,
) -> SynthesisReport:
    """Generate, judge, de-duplicate and write the training set for `mode`; resumes from `out_dir`.

    `spend` (the run's budget) is asked before each chunk whether it fits, and charged after it;
    when the next chunk would overspend it raises BudgetExhausted, and the questions done so far
    stay in attempts.jsonl for the next run to resume from.
    """
    if not examples:
        raise ValueError("synthesize() got no training questions; check task.train_size and the dataset")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "attempts.jsonl"
    done = _load_done(log_path)
    _rewrite_log(log_path, done)  # drop a cut-off last line before appending
    before = replace(backend.usage)
    params = SamplingParams(n=num_samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    todo = [ex for ex in examples if ex.id not in done]
    resumed = len(examples) - len(todo)
    progress = _Progress(len(examples), resumed, mode)
    with log_path.open("a", encoding="utf-8") as attempts:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            if spend:
                spend.before(chunk)
            began, usage = time.perf_counter(), replace(backend.usage)
            for q in _synthesize_chunk(backend, domain, chunk, mode, params, max_attempts, match):
                done[q.example.id] = q.samples
                progress.add(q.samples)
                attempts.write(
                    json.dumps({"question_id": q.example.id, "samples": q.samples}, ensure_ascii=False) + "\n"
                )
            attempts.flush()
            os.fsync(attempts.fileno())
            if spend:
                spend.after(chunk, usage_since(usage, backend.usage), time.perf_counter() - began)
            progress.report(final=start + CHUNK >= len(todo))
    return _write_outputs(out, backend, domain, examples, done, mode, before, resumed=resumed)


class ChunkSpend(Protocol):
    """What synthesis asks of a budget: may this chunk run, and what did it cost."""

    def before(self, chunk: list[Example]) -> None: ...

    def after(self, chunk: list[Example], usage: Usage, seconds: float) -> None: ...


def usage_since(before: Usage, after: Usage) -> Usage:
    return Usage(
        requests=after.requests - before.requests,
        prompt_tokens=after.prompt_tokens - before.prompt_tokens,
        completion_tokens=after.completion_tokens - before.completion_tokens,
        seconds=after.seconds - before.seconds,
        cost_usd=after.cost_usd - before.cost_usd,
    )


class SynthesisSpend:
    """Synthesis charged to the run's ledger chunk by chunk, each chunk checked against what is left.

    The first chunk is priced from the teacher's probe (its measured cost per question times the
    samples asked); every later one from the chunk before it.
    """

    def __init__(self, budget: Budget, key: str, kind: str, per_question_usd: float) -> None:
        self.budget, self.key, self.kind = budget, key, kind
        self.ledger, self.per_question = budget.ledger(), per_question_usd

    def before(self, chunk: list[Example]) -> None:
        self.ledger.check("synthesis", self.per_question * len(chunk))

    def after(self, chunk: list[Example], usage: Usage, seconds: float) -> None:
        if self.kind == "openai":
            usd, basis, note = usage.cost_usd, "api", "tokens x the teacher's prices"
        elif self.kind == "stored":
            usd, basis, note = 0.0, "stored", "recorded completions, paid for when recorded"
        else:
            usd, basis, note = self.budget.gpu_usd(seconds), self.budget.gpu_basis, self.budget.gpu_note()
        entry = Entry(
            id=f"synthesis:{self.key}:{digest([e.id for e in chunk])}",
            stage="synthesis",
            item=f"{len(chunk)} questions ({chunk[0].id}...)",
            usd=usd,
            basis=basis,  # type: ignore[arg-type]
            note=note,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=seconds,
        )
        self.ledger.charge(entry)
        self.per_question = usd / len(chunk)


class _Progress:
    """Questions done and samples kept so far, reported every PROGRESS_EVERY_S (stratos.progress)."""

    def __init__(self, total: int, resumed: int, mode: Mode):
        self.done, self.samples, self.accepted = resumed, 0, 0
        self.stage = StageProgress(
            f"synthesis ({mode})", total, "synthesis-progress", log, PROGRESS_EVERY_S, resumed
        )
        if resumed:
            log.info("synthesis (%s): resuming, %d of %d questions already done", mode, resumed, total)

    def add(self, samples: list[dict[str, Any]]) -> None:
        self.done += 1
        self.samples += len(samples)
        self.accepted += sum(s["verdict"] == ACCEPTED for s in samples)

    def report(self, final: bool = False) -> None:
        self.stage.update(self.done, f"{self.accepted} of {self.samples} samples accepted", final)


def _rewrite_log(path: Path, done: dict[str, list[dict[str, Any]]]) -> None:
    lines = (json.dumps({"question_id": k, "samples": v}, ensure_ascii=False) + "\n" for k, v in done.items())
    write_text_atomic(path, "".join(lines))


def _write_outputs(
    out: Path,
    backend: Backend,
    domain: Domain,
    examples: list[Example],
    done: dict[str, list[dict[str, Any]]],
    mode: Mode,
    before,
    resumed: int,
) -> SynthesisReport:
    rows, seen = [], set()
    for ex in examples:
        for s in done[ex.id]:
            v = s["verdict"]
            completion = s.get("completion", s["text"])  # logs written before canonical rewriting lack it
            key = (ex.id, " ".join(completion.split()))
            if v == ACCEPTED and key in seen:
                v = "duplicate"
            seen.add(key)
            rows.append(
                {
                    "question_id": ex.id,
                    "question": ex.question,
                    "gold": ex.answer,
                    "completion": completion,
                    "teacher": backend.name,
                    "mode": mode,
                    "sample_index": s["index"],
                    "verdict": v,
                    "raw_completion": s["text"],
                    "answer_rule": s.get("rule") or "",
                }
            )
    accepted = [r for r in rows if r["verdict"] == ACCEPTED]
    write_parquet(rows, out / "samples.parquet", SAMPLE_FEATURES)
    write_parquet(accepted, out / "train.parquet", SAMPLE_FEATURES)
    verdicts = dict(Counter(r["verdict"] for r in rows))
    usage = backend.usage
    report = SynthesisReport(
        mode=mode,
        teacher=backend.name,
        questions=len(examples),
        samples=len(rows),
        accepted=len(accepted),
        questions_covered=len({r["question_id"] for r in accepted}),
        verdicts=verdicts,
        prompt_tokens=usage.prompt_tokens - before.prompt_tokens,
        completion_tokens=usage.completion_tokens - before.completion_tokens,
        cost_usd=usage.cost_usd - before.cost_usd,
        seconds=usage.seconds - before.seconds,
        resumed_questions=resumed,
        train_path=str(out / "train.parquet"),
        samples_path=str(out / "samples.parquet"),
    )
    write_json_atomic(out / "report.json", report.to_dict())
    return report


# --- the stages ------------------------------------------------------------------------------


class Strategy(BaseModel):
    mode: Mode
    reason: str


@task(name="choose-strategy", task_run_name="choose-strategy", cache_policy=CONTENT, persist_result=True)
def choose_strategy(teacher_accuracy: float, strategy: StrategySettings) -> Strategy:
    """Knowledge Alignment when the teacher's probe accuracy reaches tau, else Knowledge Injection."""
    mode, reason = choose_mode(teacher_accuracy, strategy.tau, strategy.force_mode)
    return Strategy(mode=mode, reason=reason)


class SynthesisJob(StageJob):
    stage: ClassVar[str] = "synthesize"

    budget: Budget | None = None
    planned_usd: float = Field(0.0, description="Planned cost per training question (from the probe).")
    task: TaskSpec
    teacher: ResolvedModel
    train: SplitFile
    mode: Mode
    strategy: StrategySettings


class Synthesis(BaseModel):
    """Where the training set is (synthesis/<key>/ in the store), its hash, and what synthesis saw."""

    uri: str
    train_sha256: str
    report: SynthesisReport
    where: Ran  # which machine and process ran it


class SynthesisFailed(ValueError):
    """The teacher produced no accepted trace: a fact about teacher and settings, not worth a retry."""


def run_synthesis(job: SynthesisJob) -> Synthesis:
    """The teacher writes the training set in job.mode; published as synthesis/<key>/ (train.parquet + logs)."""
    with locked_work_dir(job.stage, job.key) as out:  # a concurrent identical run waits, then resumes to done
        s = job.strategy
        report = synthesize(
            job.teacher.backend(),
            get_domain(job.task),
            load_split(job.train),
            job.mode,
            out,
            s.num_samples,
            s.max_attempts,
            s.temperature,
            s.max_new_tokens,
            seed=0,
            match=job.task.answer_match,
            spend=SynthesisSpend(job.budget, job.key, job.teacher.candidate.kind, job.planned_usd)
            if job.budget
            else None,
        )
        if report.accepted == 0:
            raise SynthesisFailed(
                f"synthesis kept no training example ({report.verdicts}); the teacher '{job.teacher.name}' never "
                "produced a verified answer. Raise strategy.max_attempts or num_samples, or use a stronger teacher"
            )
        folder = from_uri(job.store_uri).put_dir(f"synthesis/{job.key}", out)
        return Synthesis(
            uri=folder.uri,
            train_sha256=content_digest(out / "train.parquet"),
            report=report,
            where=Ran.here(),
        )


@task(
    name="synthesize",
    task_run_name="synthesize",
    cache_policy=dispatched(run_synthesis),
    persist_result=True,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
)
def synthesize_data(job: SynthesisJob, runner: Runner) -> Synthesis:
    """The teacher writes the student's training set, where the runner places the work."""
    return runner.run(run_synthesis, job)
