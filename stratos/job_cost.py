"""The whole job's cost on each server, before the run: synthesis, training, evaluation, serving.

The budget is the job's, so server selection needs each server's job cost, not
only its $/h. This module holds the formulas; stratos/job_profile.py reads a
spec into the server-independent `JobProfile` they take (model sizes, token
counts, prices). Every figure is a range, (low, planned, high):

    synthesis   API teacher: questions x (requests x prompt tokens x $/in + samples x completion tokens x $/out)
                local teacher: batched roofline generation time on one GPU / generation_efficiency, x $/h
    training    sequences x tokens per sequence x FLOPs per token / (one GPU's peak bf16 x MFU), x $/h
                FLOPs per token: 6N full, 4N + 6 N_lora LoRA (stratos.estimates); GRPO adds the
                student's own generation (num_generations per question and epoch)
    evaluation  every teacher on the probe, every student on the pre-screen (zero- and few-shot),
                the teacher and the student on the test split: API tokens x prices or generation time
    serving     job_estimate.serve_hours x $/h

Which teacher and student each case takes, and how servers are swept: stratos/job_estimate.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from stratos.estimates import FULL_FINETUNE_MAX_PARAMS, generation_seconds, training_flops_per_token
from stratos.spec import JobEstimateSettings, StrategySettings, TaskSpec, TrainingSettings

Case = Literal["low", "planned", "high"]
Stage = Literal["synthesis", "training", "evaluation", "serving"]
Mode = Literal["alignment", "injection"]
CASES: tuple[Case, ...] = ("low", "planned", "high")
STAGES: tuple[Stage, ...] = ("synthesis", "training", "evaluation", "serving")
# Batch sizes as the stages run them: tasks/synthesize.py's CHUNK questions per generate() call
# (x num_samples sequences), and stratos.evaluation.evaluate's batch_size.
SYNTHESIS_QUESTIONS_PER_CALL = 32
EVAL_BATCH = 32


@dataclass(frozen=True)
class CostRange:
    """Dollars (or seconds) as a range."""

    low: float
    planned: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"low": round(self.low, 4), "planned": round(self.planned, 4), "high": round(self.high, 4)}


@dataclass(frozen=True)
class ModelSize:
    """What the formulas need of a model; `source` says where the figures come from."""

    params: float  # all parameters, tied embeddings once
    matmul: float  # parameters a token is multiplied by (an untied input embedding is a lookup)
    lora: float  # adapter parameters at the spec's lora_r (0 when unknown: under 3% of LoRA FLOPs)
    kv_token_bytes: float  # K and V cached per token, all layers, bf16
    source: str


@dataclass(frozen=True)
class TaskTokens:
    """Mean tokens per question of the task's text (prompts as the domain writes them)."""

    prompt: float  # forward prompt: system + question
    injection_prompt: float  # question + gold answer (Knowledge Injection)
    reference: float  # the reference completion (rationale + answer line): the short end of an answer
    source: str


@dataclass(frozen=True)
class MeasuredTokens:
    """Mean tokens per question measured on a teacher's probe."""

    prompt: float
    completion: float
    accuracy: float | None = None

    @classmethod
    def from_eval(cls, result: Any) -> MeasuredTokens:
        """From a stratos.evaluation.EvalResult (prompt_tokens, completion_tokens, n, accuracy)."""
        n = max(int(result.n), 1)
        return cls(result.prompt_tokens / n, result.completion_tokens / n, result.accuracy)


@dataclass(frozen=True)
class TeacherWork:
    """A teacher candidate as the estimate sees it."""

    name: str
    kind: str  # hf (generates on the server), openai (priced per token), stored ($0)
    size: ModelSize | None  # for kind hf
    usd_per_prompt_token: float = 0.0
    usd_per_completion_token: float = 0.0
    measured: MeasuredTokens | None = None
    mode: Mode | None = None  # known when forced or probed; None: either


@dataclass(frozen=True)
class StudentWork:
    """A student candidate as the estimate sees it."""

    name: str
    size: ModelSize
    method: str  # full | lora | grpo


@dataclass(frozen=True)
class JobProfile:
    """Everything the job estimate needs that does not depend on the server."""

    estimate: JobEstimateSettings
    strategy: StrategySettings = field(default_factory=StrategySettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    task: TaskSpec | None = None  # None: the job is serving only
    tokens: TaskTokens | None = None
    teachers: tuple[TeacherWork, ...] = ()
    students: tuple[StudentWork, ...] = ()
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> assumptions, skipped models


def serving_only(estimate: JobEstimateSettings, why: str) -> JobProfile:
    """A profile for a spec that describes no task: the job is its serving hours."""
    return JobProfile(estimate, notes={"synthesis": (why,), "training": (why,), "evaluation": (why,)})


# --------------------------------------------------------------- per-unit formulas


def throughput_share(triple: tuple[float, float, float], case: Case) -> float:
    """A throughput share for a cost case: the low cost end takes the highest share."""
    return {"low": triple[2], "planned": triple[1], "high": triple[0]}[case]


def overhead_seconds(triple: tuple[float, float, float], case: Case) -> float:
    return {"low": triple[0], "planned": triple[1], "high": triple[2]}[case]


def teacher_mode(profile: JobProfile, teacher: TeacherWork) -> Mode | None:
    return profile.strategy.force_mode or teacher.mode


def prompt_tokens(profile: JobProfile, teacher: TeacherWork | None = None) -> float:
    """Forward prompt tokens: the teacher's probe measured them, else the task text's count."""
    if teacher is not None and teacher.measured is not None and teacher.measured.prompt > 0:
        return teacher.measured.prompt
    return profile.tokens.prompt if profile.tokens else 0.0


def completion_tokens(profile: JobProfile, case: Case, teacher: TeacherWork | None = None) -> float:
    """Tokens per completion: measured by a probe, else the cap (planned) or the reference length (low)."""
    cap = float(profile.strategy.max_new_tokens)
    if case == "high":
        return cap
    if teacher is not None and teacher.measured is not None and teacher.measured.completion > 0:
        return min(teacher.measured.completion, cap)
    if case == "planned" or profile.tokens is None:
        return cap
    return min(profile.tokens.reference, cap)


def trace_tokens(profile: JobProfile, case: Case) -> float:
    """Tokens of a kept trace: the measured teachers' range, else as completion_tokens without a teacher."""
    measured = [t for t in profile.teachers if t.measured is not None and t.measured.completion > 0]
    if not measured or case == "high":
        return completion_tokens(profile, case)
    pick = min if case == "low" else max
    return pick(completion_tokens(profile, case, t) for t in measured)


def synthesis_requests(profile: JobProfile, teacher: TeacherWork, case: Case) -> tuple[int, int, float]:
    """Per training question: (requests, completions, prompt tokens per request).

    Alignment asks once for num_samples; injection asks again for the questions still
    unsolved, up to ceil(max_attempts / num_samples) rounds (tasks/synthesize.py).
    """
    n = profile.strategy.num_samples
    mode = teacher_mode(profile, teacher)
    forward = prompt_tokens(profile, teacher)
    if mode == "alignment" or (mode is None and case == "low"):
        return 1, n, forward
    injection = forward + (profile.tokens.injection_prompt - profile.tokens.prompt if profile.tokens else 0)
    if case == "low":
        return 1, n, injection
    rounds = max(1, math.ceil(profile.strategy.max_attempts / n))
    return rounds, rounds * n, injection


def api_usd(
    teacher: TeacherWork, requests: float, prompt: float, completions: float, completion: float
) -> float:
    """Dollars for `requests` prompts and `completions` completions at the teacher's token prices."""
    return (
        requests * prompt * teacher.usd_per_prompt_token
        + completions * completion * teacher.usd_per_completion_token
    )


def local_seconds(
    size: ModelSize,
    gpus: pd.DataFrame,
    efficiency: float,
    sequences: float,
    prompt: float,
    completion: float,
    batch: int,
) -> np.ndarray:
    """Generation seconds on each GPU of `gpus` (columns tflops, bandwidth_gbs: one GPU's)."""
    roofline = generation_seconds(
        size.params,
        size.matmul,
        size.kv_token_bytes,
        gpus["tflops"].to_numpy(),
        gpus["bandwidth_gbs"].to_numpy(),
        sequences,
        prompt,
        completion,
        batch,
    )
    return roofline / efficiency


def synthesis_cost(
    profile: JobProfile, teacher: TeacherWork, gpus: pd.DataFrame, questions: float, case: Case
) -> tuple[float, np.ndarray]:
    """(API dollars, GPU seconds per GPU row) to synthesize traces for `questions` training questions."""
    requests, samples, prompt = synthesis_requests(profile, teacher, case)
    completion = completion_tokens(profile, case, teacher)
    if teacher.kind == "openai":
        return questions * api_usd(teacher, requests, prompt, samples, completion), np.zeros(len(gpus))
    if teacher.kind != "hf" or teacher.size is None:
        return 0.0, np.zeros(len(gpus))  # stored completions were paid for already
    batch = SYNTHESIS_QUESTIONS_PER_CALL * profile.strategy.num_samples
    efficiency = throughput_share(profile.estimate.generation_efficiency, case)
    seconds = local_seconds(teacher.size, gpus, efficiency, questions * samples, prompt, completion, batch)
    return 0.0, seconds


def answer_cost(
    profile: JobProfile,
    model: TeacherWork | StudentWork,
    gpus: pd.DataFrame,
    questions: float,
    case: Case,
    prompt: float | None = None,
) -> tuple[float, np.ndarray]:
    """(API dollars, GPU seconds) for one greedy answer to each of `questions` questions (evaluation)."""
    teacher = model if isinstance(model, TeacherWork) else None
    prompt = prompt_tokens(profile, teacher) if prompt is None else prompt
    completion = completion_tokens(profile, case, teacher)
    if teacher is not None and teacher.kind == "openai":
        return questions * api_usd(teacher, 1, prompt, 1, completion), np.zeros(len(gpus))
    size = model.size
    if size is None or (teacher is not None and teacher.kind != "hf"):
        return 0.0, np.zeros(len(gpus))
    efficiency = throughput_share(profile.estimate.generation_efficiency, case)
    return 0.0, local_seconds(size, gpus, efficiency, questions, prompt, completion, EVAL_BATCH)


def training_seconds(
    profile: JobProfile, student: StudentWork, gpus: pd.DataFrame, sequences: float, case: Case
) -> np.ndarray:
    """GPU seconds to train on `sequences` examples (SFT), or `sequences` sampled completions (GRPO)."""
    t = profile.training
    tokens = min(float(t.max_seq_length), prompt_tokens(profile) + trace_tokens(profile, case))
    size = student.size
    inner = "full" if size.params <= FULL_FINETUNE_MAX_PARAMS else "lora"
    per_token = training_flops_per_token(
        size.matmul, size.lora, inner if student.method == "grpo" else student.method
    )
    if student.method == "grpo" and t.beta > 0:
        per_token += 2 * size.matmul  # the frozen reference model's forward for the KL term
    mfu = throughput_share(profile.estimate.mfu, case)
    seconds = sequences * tokens * per_token / (gpus["tflops"].to_numpy() * 1e12 * mfu)
    if student.method == "grpo":  # the student samples its own completions first
        efficiency = throughput_share(profile.estimate.generation_efficiency, case)
        completion = tokens - prompt_tokens(profile)
        seconds = seconds + local_seconds(
            size,
            gpus,
            efficiency,
            sequences,
            prompt_tokens(profile),
            completion,
            t.per_device_train_batch_size,
        )
    return seconds


def training_sequences(profile: JobProfile, student: StudentWork, case: Case) -> float:
    """Sequences the whole training run processes: kept traces x epochs, or GRPO's samples x epochs."""
    assert profile.task is not None
    t, questions = profile.training, profile.task.train_size
    if student.method == "grpo":
        return questions * t.num_generations * t.num_train_epochs
    kept = questions if case == "low" else questions * profile.strategy.num_samples
    return kept * t.num_train_epochs


# --------------------------------------------------------------- the ledger's hook


def estimate_stage_cost(
    stage: Stage, server: Mapping[str, Any], profile: JobProfile, model: str | None = None, units: float = 1.0
) -> CostRange:
    """Dollars for the next `units` of a stage on `server`, from the job estimate's formulas.

    units: synthesis = training questions (model: the teacher), training = optimizer steps (model: the
    student), evaluation = questions (model: a teacher or a student), serving = hours. `server` is a
    catalog or selection row (cost_per_hour or price, tflops, gpu_count, bandwidth_gbs). No stage
    overhead is added: the stage is already running.
    """
    price = float(server["cost_per_hour"] if server.get("cost_per_hour") is not None else server["price"])
    gpus = pd.DataFrame(
        {
            "tflops": [float(server["tflops"]) / max(float(server["gpu_count"]), 1.0)],
            "bandwidth_gbs": [float(server["bandwidth_gbs"])],
        }
    )
    return CostRange(*(_stage_usd(stage, gpus, price, profile, model, units, case) for case in CASES))


def _stage_usd(
    stage: Stage,
    gpus: pd.DataFrame,
    price: float,
    profile: JobProfile,
    model: str | None,
    units: float,
    case: Case,
) -> float:
    if stage == "serving":
        return units * price
    if stage == "training":
        student = _named(profile.students, model, "student")
        seqs = units * profile.training.per_device_train_batch_size
        return float(training_seconds(profile, student, gpus, seqs, case)[0]) * price / 3600
    candidates = (*profile.teachers, *profile.students) if stage == "evaluation" else profile.teachers
    chosen = _named(candidates, model, "teacher" if stage == "synthesis" else "model")
    cost = synthesis_cost if stage == "synthesis" else answer_cost
    api, seconds = cost(profile, chosen, gpus, units, case)  # type: ignore[arg-type]
    return api + float(seconds[0]) * price / 3600


def _named(
    candidates: tuple[TeacherWork | StudentWork, ...], name: str | None, role: str
) -> TeacherWork | StudentWork:
    for c in candidates:
        if c.name == name:
            return c
    known = ", ".join(c.name for c in candidates) or "none"
    raise ValueError(
        f"{role} '{name}' is not in the job profile (estimated: {known}); pass one of those names"
    )
