"""Stage 4: choose the distillation strategy and synthesize the student's training data.

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
from typing import Any, Literal

import datasets
from prefect import task
from prefect.cache_policies import NO_CACHE

from stratos.backends.base import Backend, Messages, SamplingParams
from stratos.domains.base import ANSWER_MARK, Domain, Example
from stratos.files import write_json_atomic, write_text_atomic
from tasks.prepare_data import write_parquet

Mode = Literal["alignment", "injection"]
ACCEPTED = "accepted"
CHUNK = 32  # questions per generate() call; also the resume granularity
PROGRESS_EVERY_S = 15.0  # seconds between progress lines
log = logging.getLogger(__name__)
SAMPLE_FEATURES = datasets.Features({
    "question_id": datasets.Value("string"), "question": datasets.Value("string"), "gold": datasets.Value("string"),
    "completion": datasets.Value("string"), "teacher": datasets.Value("string"), "mode": datasets.Value("string"),
    "sample_index": datasets.Value("int32"), "verdict": datasets.Value("string"),
})  # fmt: skip


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


def verdict(domain: Domain, example: Example, text: str, mode: Mode) -> str:
    """One sample's fate: accepted, or the first check it failed."""
    predicted = domain.extract(text)
    if predicted is None:
        return "no_answer"
    if not domain.score(predicted, example.answer):
        return "wrong_answer"
    if not domain.verify(example, text):
        return "failed_verifier"
    rationale = text.rsplit(ANSWER_MARK, 1)[0]
    if mode == "injection" and restates_answer(rationale, example.answer):
        return "restates_answer"
    return ACCEPTED


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


def _generate_round(backend: Backend, domain: Domain, pending: list[_Question], mode: Mode,
                    params: SamplingParams) -> None:  # fmt: skip
    """One round of `params.n` samples for each pending question, judged on arrival."""
    outputs = backend.generate([_prompt(domain, q.example, mode) for q in pending], params)
    for q, completions in zip(pending, outputs, strict=True):
        for c in completions:
            q.samples.append(
                {"index": len(q.samples), "text": c.text, "verdict": verdict(domain, q.example, c.text, mode)}
            )


def _synthesize_chunk(backend: Backend, domain: Domain, chunk: list[Example], mode: Mode,
                      params: SamplingParams, max_attempts: int) -> list[_Question]:  # fmt: skip
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
) -> SynthesisReport:
    """Generate, judge, de-duplicate and write the training set for `mode`; resumes from `out_dir`."""
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
            for q in _synthesize_chunk(
                backend, domain, todo[start : start + CHUNK], mode, params, max_attempts
            ):
                done[q.example.id] = q.samples
                progress.add(q.samples)
                attempts.write(
                    json.dumps({"question_id": q.example.id, "samples": q.samples}, ensure_ascii=False) + "\n"
                )
            attempts.flush()
            os.fsync(attempts.fileno())
            progress.report(final=start + CHUNK >= len(todo))
    return _write_outputs(out, backend, domain, examples, done, mode, before, resumed=resumed)


class _Progress:
    """One log line every PROGRESS_EVERY_S: questions done, samples kept so far, ETA."""

    def __init__(self, total: int, resumed: int, mode: Mode):
        self.total, self.resumed, self.done, self.mode = total, resumed, resumed, mode
        self.samples = self.accepted = 0
        self.started = self.last = time.perf_counter()
        if resumed:
            log.info("synthesis (%s): resuming, %d of %d questions already done", mode, resumed, total)

    def add(self, samples: list[dict[str, Any]]) -> None:
        self.done += 1
        self.samples += len(samples)
        self.accepted += sum(s["verdict"] == ACCEPTED for s in samples)

    def report(self, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < PROGRESS_EVERY_S:
            return
        self.last, elapsed, new = now, now - self.started, self.done - self.resumed
        eta = elapsed / new * (self.total - self.done) if new else float("nan")
        log.info("synthesis (%s): %d/%d questions, %d of %d samples accepted, elapsed %.0fs eta %.0fs",
                 self.mode, self.done, self.total, self.accepted, self.samples, elapsed, eta)  # fmt: skip


def _rewrite_log(path: Path, done: dict[str, list[dict[str, Any]]]) -> None:
    lines = (json.dumps({"question_id": k, "samples": v}, ensure_ascii=False) + "\n" for k, v in done.items())
    write_text_atomic(path, "".join(lines))


def _write_outputs(out: Path, backend: Backend, domain: Domain, examples: list[Example],
                   done: dict[str, list[dict[str, Any]]], mode: Mode, before, resumed: int) -> SynthesisReport:  # fmt: skip
    rows, seen = [], set()
    for ex in examples:
        for s in done[ex.id]:
            v = s["verdict"]
            key = (ex.id, " ".join(s["text"].split()))
            if v == ACCEPTED and key in seen:
                v = "duplicate"
            seen.add(key)
            rows.append({"question_id": ex.id, "question": ex.question, "gold": ex.answer, "completion": s["text"],
                         "teacher": backend.name, "mode": mode, "sample_index": s["index"], "verdict": v})  # fmt: skip
    accepted = [r for r in rows if r["verdict"] == ACCEPTED]
    write_parquet(rows, out / "samples.parquet", SAMPLE_FEATURES)
    write_parquet(accepted, out / "train.parquet", SAMPLE_FEATURES)
    verdicts = dict(Counter(r["verdict"] for r in rows))
    usage = backend.usage
    report = SynthesisReport(
        mode=mode, teacher=backend.name, questions=len(examples), samples=len(rows), accepted=len(accepted),
        questions_covered=len({r["question_id"] for r in accepted}), verdicts=verdicts,
        prompt_tokens=usage.prompt_tokens - before.prompt_tokens,
        completion_tokens=usage.completion_tokens - before.completion_tokens,
        cost_usd=usage.cost_usd - before.cost_usd, seconds=usage.seconds - before.seconds,
        resumed_questions=resumed, train_path=str(out / "train.parquet"), samples_path=str(out / "samples.parquet"),
    )  # fmt: skip
    write_json_atomic(out / "report.json", report.to_dict())
    return report


synthesize_task = task(synthesize, name="synthesize", cache_policy=NO_CACHE)
