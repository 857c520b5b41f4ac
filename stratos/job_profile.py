"""Read a spec into the JobProfile the job estimate takes: model sizes, token counts, prices.

Model sizes, best source first:
- a local model directory: its config, counted exactly as stratos.estimates does;
- a hub id with HF_HUB_OFFLINE=0: its config from the hub;
- a zoo reference (`zoo:nano`, `zoo:base-micro`, `zoo:teacher-strong`): the zoo's shape at its
  512-token vocabulary, without building anything;
- a hub id offline: the size its name states ('Qwen/Qwen2.5-7B-Instruct' -> 7e9), every weight
  counted as a matmul, KV cache at KV_BYTES_PER_BILLION, adapters left out. A name that states
  no size is left out of the estimate, and the output says so.

Token counts: SAMPLE_QUESTIONS questions of the task's training split through the domain's own
prompts, counted by the first local student's tokenizer (with its chat template), else at
job_estimate.chars_per_token. A probe result, when given, replaces the prompt and completion
lengths of the teacher it measured and fixes its mode (accuracy against strategy.tau).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stratos.domains import get_domain
from stratos.domains.base import completion_text
from stratos.estimates import (
    FULL_FINETUNE_MAX_PARAMS,
    count_params,
    kv_bytes_per_token,
    load_config,
    lora_param_count,
    matmul_params,
)
from stratos.job_cost import (
    JobProfile,
    MeasuredTokens,
    ModelSize,
    StudentWork,
    TaskTokens,
    TeacherWork,
    serving_only,
)
from stratos.spec import DistillSpec, ModelCandidate, TaskSpec

SAMPLE_QUESTIONS = 64  # training questions read to measure prompt and answer lengths
ZOO_VOCAB = 512  # the vocabulary stratos.zoo.domain_tokenizer builds
# KV cache per token per 1e9 parameters when no config is readable: Qwen2.5-7B has 7.5 KiB,
# Qwen2.5-0.5B 24, Llama-3-8B 16 (all bf16, grouped-query attention).
KV_BYTES_PER_BILLION = 16 * 1024
ZOO_PREFIX = (
    "zoo:"  # stratos.zoo.ZOO_PREFIX; importing stratos.zoo loads torch, which hub-id specs never need
)
SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])")


def _config_size(config, lora_r: int, source: str) -> ModelSize:
    return ModelSize(
        params=count_params(config),
        matmul=matmul_params(config),
        lora=lora_param_count(config, lora_r),
        kv_token_bytes=kv_bytes_per_token(config),
        source=source,
    )


def _zoo_size(model: str, lora_r: int) -> ModelSize:
    """The shape a zoo reference would be built with (not built here)."""
    from transformers import Qwen2Config  # heavy, like stratos.zoo: only for zoo references

    from stratos import zoo

    name = model.removeprefix(ZOO_PREFIX)
    if name in zoo.WHEEL_MODELS:  # a real pretrained model: its published shape
        from transformers import AutoConfig

        wheel = zoo.WHEEL_MODELS[name]
        config = AutoConfig.for_model(wheel.architecture, **dict(wheel.shape))
        return _config_size(config, lora_r, f"{wheel.hub_id}'s published shape")
    size = name.removeprefix("base-")
    if size not in zoo.SIZES:
        # A zoo teacher's size is in its recipe; stratos.teachers imports TRL, so only load it here.
        from stratos.teachers import RECIPES

        strength = name.removeprefix("teacher-")
        if strength not in RECIPES:
            raise ValueError(f"unknown zoo model '{model}'; use one of {', '.join(zoo.known_refs())}")
        size = RECIPES[strength]["size"]
    config = Qwen2Config(vocab_size=ZOO_VOCAB, tie_word_embeddings=True, **zoo.SIZES[size])
    return _config_size(config, lora_r, f"zoo '{size}' shape at a {ZOO_VOCAB}-token vocabulary")


def _named_size(model: str) -> ModelSize | None:
    """The size a hub id states in its name, or None."""
    found = SIZE_IN_NAME.findall(model.rsplit("/", 1)[-1])
    if not found:
        return None
    value, unit = found[-1]
    params = float(value) * (1e9 if unit in "bB" else 1e6)
    return ModelSize(
        params=params,
        matmul=params,
        lora=0.0,
        kv_token_bytes=params / 1e9 * KV_BYTES_PER_BILLION,
        source=f"{value}{unit.upper()} from the name (no config offline): every weight a matmul, "
        f"KV {KV_BYTES_PER_BILLION // 1024} KiB/token per 1e9 parameters, LoRA adapters left out",
    )


def model_size(candidate: ModelCandidate, lora_r: int) -> tuple[ModelSize | None, str]:
    """The candidate's size and a sentence saying where it comes from (or why it is unknown)."""
    model = candidate.model
    if model.startswith(ZOO_PREFIX):
        size = _zoo_size(model, lora_r)
        return size, f"{candidate.name}: {size.params / 1e6:.2f}M parameters, {size.source}"
    path = Path(model).expanduser()
    if path.is_dir() or os.environ.get("HF_HUB_OFFLINE") == "0":
        try:
            size = _config_size(load_config(model), lora_r, "its config")
            return size, f"{candidate.name}: {size.params / 1e9:.3f}B parameters from its config"
        except ValueError:
            if path.is_dir():
                raise
    if model.startswith(("/", ".", "~")):
        return None, f"{candidate.name}: left out, '{model}' is not a model directory"
    size = _named_size(model)
    if size is None:
        return None, (
            f"{candidate.name}: left out, hub id '{model}' is unreadable offline and its name states no size; "
            "give a local directory or set HF_HUB_OFFLINE=0"
        )
    return size, f"{candidate.name}: {size.params / 1e9:.3g}B parameters, {size.source}"


def _tokenizer_counter(path: Path) -> Callable[[list[dict[str, str]]], float]:
    """Token count of a chat prompt through a local tokenizer (its chat template when it has one)."""
    from transformers import AutoTokenizer  # heavy; only when a local tokenizer exists

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.chat_template:
        return lambda msgs: len(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
    return lambda msgs: sum(len(tok(m["content"])["input_ids"]) for m in msgs)


def _token_counter(spec: DistillSpec) -> tuple[Callable[[list[dict[str, str]]], float], str]:
    """Counts a chat prompt's tokens: the first local student's tokenizer, else chars / chars_per_token."""
    for cand in spec.students:
        path = Path(cand.model).expanduser()
        if (path / "tokenizer_config.json").is_file():
            return _tokenizer_counter(path), f"{cand.name}'s tokenizer"
    ratio = spec.servers.job_estimate.chars_per_token
    return lambda msgs: sum(len(m["content"]) for m in msgs) / ratio, f"{ratio:g} characters per token"


def task_tokens(spec: DistillSpec) -> TaskTokens:
    """Mean prompt, injection prompt and reference answer tokens over a sample of the training questions."""
    task: TaskSpec = spec.task  # type: ignore[assignment]
    domain = get_domain(task)
    sample = domain.load("train", min(SAMPLE_QUESTIONS, task.train_size), task.seed)
    if not sample:
        raise ValueError("the task's training split is empty; check task.dataset and task.train_size")
    count, how = _token_counter(spec)
    n = len(sample)
    forward = sum(count(domain.messages(ex.question)) for ex in sample) / n
    injection = sum(count(domain.injection_messages(ex.question, ex.answer)) for ex in sample) / n
    answer = [[{"role": "assistant", "content": completion_text(ex.rationale, ex.answer)}] for ex in sample]
    reference = sum(count(m) for m in answer) / n
    return TaskTokens(forward, injection, reference, f"{n} training questions, {how}")


def _teacher(
    cand: ModelCandidate, lora_r: int, measured: MeasuredTokens | None, tau: float
) -> tuple[TeacherWork | None, str]:
    mode = (
        None
        if measured is None or measured.accuracy is None
        else ("alignment" if measured.accuracy >= tau else "injection")
    )
    if cand.kind == "openai":
        note = f"{cand.name}: API at ${cand.price_per_1k_input:g} / ${cand.price_per_1k_output:g} per 1k prompt / completion tokens"
        if not (cand.price_per_1k_input or cand.price_per_1k_output):
            note = f"{cand.name}: API with no price in the spec, counted at $0"
        work = TeacherWork(
            cand.name,
            "openai",
            None,
            cand.price_per_1k_input / 1000,
            cand.price_per_1k_output / 1000,
            measured,
            mode,
        )
        return work, note
    if cand.kind == "stored":
        return TeacherWork(
            cand.name, "stored", None, measured=measured, mode=mode
        ), f"{cand.name}: stored completions, $0"
    size, note = model_size(cand, lora_r)
    if size is None:
        return None, note
    return TeacherWork(
        cand.name, "hf", size, measured=measured, mode=mode
    ), f"{note}; generates on the server"


def _student(cand: ModelCandidate, spec: DistillSpec) -> tuple[StudentWork | None, str]:
    size, note = model_size(cand, spec.training.lora_r)
    if size is None:
        return None, note
    cap = spec.constraints.max_student_params
    if cap is not None and size.params > cap:
        return (
            None,
            f"{cand.name}: left out, {size.params:,.0f} parameters is above constraints.max_student_params",
        )
    method = spec.training.method
    if method == "auto":
        method = "full" if size.params <= FULL_FINETUNE_MAX_PARAMS else "lora"
    return StudentWork(cand.name, size, method), f"{note}; trained with {method}"


def job_profile(
    spec: DistillSpec,
    probes: Mapping[str, Any] | None = None,
    tokens: TaskTokens | None = None,
) -> JobProfile:
    """The spec's job, independent of the server.

    Args:
        probes: teacher name -> its probe (a stratos.evaluation.EvalResult or MeasuredTokens); measured
            token counts then replace the pre-probe lengths, and the accuracy fixes the mode.
        tokens: the task's token counts, when already known (else measured on a sample).
    """
    est = spec.servers.job_estimate
    if spec.task is None:
        return serving_only(est, "the spec has no task, so only serving is estimated")
    measured = {
        name: p if isinstance(p, MeasuredTokens) else MeasuredTokens.from_eval(p)
        for name, p in (probes or {}).items()
    }
    tokens = tokens or task_tokens(spec)
    teachers, t_notes = _collect(
        lambda c: _teacher(c, spec.training.lora_r, measured.get(c.name), spec.strategy.tau), spec.teachers
    )
    students, s_notes = _collect(lambda c: _student(c, spec), spec.students)
    notes = {
        "synthesis": (
            *t_notes,
            *_synthesis_notes(spec, tokens, measured),
            *_missing(teachers, "teacher", "synthesis"),
        ),
        "training": (*s_notes, *_training_notes(spec), *_missing(students, "student", "training")),
        "evaluation": _evaluation_notes(spec),
        "serving": (f"the first {est.serve_hours:g} h of serving on the chosen server",),
    }
    return JobProfile(
        est,
        _cost_view(spec.strategy),
        _cost_view(spec.training),
        spec.task,
        tokens,
        tuple(teachers),
        tuple(students),
        notes,
    )


# Settings that change no cost: kept at their defaults in a profile, so (for one) a new learning
# rate does not change the job estimate, nor re-run the server selection that depends on it.
_COSTLESS = {"learning_rate", "lora_alpha", "lora_dropout", "beta", "seed", "temperature", "force_mode"}


def _cost_view(settings):
    """`settings` with the fields that change no cost reset to their defaults."""
    return type(settings)(**settings.model_dump(exclude=_COSTLESS))


def _collect(make, candidates) -> tuple[list, list[str]]:
    works, notes = [], []
    for cand in candidates:
        work, note = make(cand)
        notes.append(note)
        if work is not None:
            works.append(work)
    return works, notes


def _missing(works: list, role: str, stage: str) -> tuple[str, ...]:
    return () if works else (f"no {role} could be sized: {stage} is not estimated ($0)",)


def _synthesis_notes(
    spec: DistillSpec, tokens: TaskTokens, measured: Mapping[str, MeasuredTokens]
) -> tuple[str, ...]:
    s = spec.strategy
    rounds = -(-s.max_attempts // s.num_samples)
    mode = s.force_mode or ("from each probed teacher's accuracy" if measured else "unknown before the probe")
    lengths = (
        f"completions: the probe's measured lengths ({', '.join(measured)}), the cap {s.max_new_tokens} at the high end"
        if measured
        else f"completions: planned and high at the cap {s.max_new_tokens} tokens, low at the reference answers' "
        f"{tokens.reference:.0f}"
    )
    return (
        f"prompt {tokens.prompt:.0f} tokens, injection prompt {tokens.injection_prompt:.0f} ({tokens.source})",
        f"mode {mode}: low = one request of {s.num_samples} samples per question; planned and high = "
        + (
            "the same"
            if s.force_mode == "alignment"
            else f"all {rounds} injection rounds ({rounds * s.num_samples} samples)"
        ),
        lengths,
        "planned takes the costlier teacher (the probe picks by accuracy), low the cheaper",
    )


def _training_notes(spec: DistillSpec) -> tuple[str, ...]:
    t, est = spec.training, spec.servers.job_estimate
    return (
        f"kept traces: low one per question, planned and high all {spec.strategy.num_samples} samples per question; "
        f"x {t.num_train_epochs:g} epochs, each at most {t.max_seq_length} tokens",
        "FLOPs per token 6N (full), 4N + 6 N_lora (LoRA: no weight gradients for frozen layers); attention terms left out",
        f"MFU {list(est.mfu)} of ONE GPU's peak bf16 (training runs in one process; other GPUs idle but paid)",
        "planned takes the first student (the flow prefers the smallest that passes), high the costliest",
    )


def _evaluation_notes(spec: DistillSpec) -> tuple[str, ...]:
    task, s, est = spec.task, spec.strategy, spec.servers.job_estimate
    assert task is not None
    return (
        f"probe: every teacher on {task.probe_size} questions; pre-screen: every student on {s.prescreen_size} "
        f"questions zero-shot and with {s.prescreen_demos} demos; test: teacher and student on {task.test_size}",
        f"local generation at {list(est.generation_efficiency)} of the batched bandwidth roofline, batch 32",
        f"{list(est.stage_overhead_s)} s of model loading per GPU stage",
    )
