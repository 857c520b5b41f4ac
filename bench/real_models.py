"""Benchmark: a real pretrained student (SmolLM2-135M-Instruct) next to a random-init one, through the stages.

    .venv/bin/python bench/real_models.py [--scenario arithmetic|mahjong] [--smoke] [--out DIR]

Scenarios:
    arithmetic  examples/arithmetic-real-student.yaml, stage by stage as the flow runs it: splits,
                server (PFG), models (the zoo builds the strong teacher and SmolLM2 on first use),
                teacher probe, pre-screen of both students (few-shot and zero-shot, strict and
                flexible), Knowledge Alignment synthesis, then *both* students distilled on the same
                traces: SmolLM2 with the spec's training section (auto -> LoRA), nano with its own
                shipped recipe (examples/arithmetic-strong-teacher.yaml: full fine-tuning, 10 epochs),
                since the spec's LoRA rate and single epoch are not what a random-init model needs.
                Every model is scored on the held-out split (strict and flexible) and timed one
                request at a time. Then, on SmolLM2 in the same run: batched generation tokens/s at
                batch 1/8/32 through HFBackend, LoRA seconds per step (median over the distillation
                run's own steps, at the spec's max_seq_length), the merged student served on the CPU
                path (tasks.serve.serve_student: health, smoke, parity) and loaded at concurrency 1
                and 8 with bench/serving.py's load loop.
    mahjong     the paper's setting with a real student: examples/mahjong-weak-teacher.yaml (10-tile
                one-suit hands, the weak zoo teacher, Knowledge Injection), its traces distilled into
                SmolLM2 (LoRA, lr 1e-3, batch 8, a budget of --mahjong-steps steps) and into nano
                (the spec's own recipe: full, 12 epochs). Tiles are 3 byte-level tokens each for
                SmolLM2 (1 for the zoo tokenizer), so the traces' SmolLM2 lengths are measured first
                and size max_seq_length and SmolLM2's generation cap. Slow: ~75 min on a quiet
                2-core machine at the defaults, estimated from the arithmetic step time and the
                lengths (weak teacher 5-9 min cold; SmolLM2's 160 steps at ~15 s, its generation on
                400 hands ~20 min); --mahjong-test-size 200 halves the evaluation.

Targets (issue 13, arithmetic): SmolLM2 distilled strict >= 95% and within 2 points of the
teacher; its pre-screen flexible accuracy above 0; batch 32 >= 8x batch 1 tokens/s. A verdict
line is printed per target. `--smoke` shrinks every size (a recorded teacher of the domain's
reference traces instead of the zoo teacher, a few questions, 2 training steps, 4 requests per
level) to prove the code path in a couple of minutes; its figures mean nothing.

Progress goes to stderr, tables and verdicts to stdout; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/serving.py: the load loop

from serving import NAME as SERVED_NAME  # noqa: E402
from serving import run_level  # noqa: E402

import stratos  # noqa: E402
from stratos import pfg  # noqa: E402
from stratos.backends.base import Backend, SamplingParams  # noqa: E402
from stratos.backends.factory import from_candidate  # noqa: E402
from stratos.backends.hf import HFBackend  # noqa: E402
from stratos.catalog import load_catalogs  # noqa: E402
from stratos.domains import get_domain  # noqa: E402
from stratos.domains.base import Domain, Example, completion_text  # noqa: E402
from stratos.evaluation import EvalResult, evaluate  # noqa: E402
from stratos.spec import (  # noqa: E402
    DistillSpec,
    ModelCandidate,
    TaskSpec,
    TrainingSettings,
    load_spec,
    require_runnable,
)
from tasks.build_models import ResolvedModel, resolve_model  # noqa: E402
from tasks.prepare_data import draw_splits, load_examples, write_splits  # noqa: E402
from tasks.select_server import ServerRow, choice_of  # noqa: E402
from tasks.select_student import StudentChoice, make_demos, select_student  # noqa: E402
from tasks.select_teacher import TeacherChoice, planned_questions, select_teacher  # noqa: E402
from tasks.serve import parity_sample, serve_student, stop_endpoint  # noqa: E402
from tasks.synthesize import Mode, SynthesisReport, choose_mode, synthesize  # noqa: E402
from tasks.train import TrainResult, train_student  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARITHMETIC_SPEC = ROOT / "examples" / "arithmetic-real-student.yaml"
NANO_ARITHMETIC_SPEC = ROOT / "examples" / "arithmetic-strong-teacher.yaml"  # nano's own recipe
MAHJONG_SPEC = ROOT / "examples" / "mahjong-weak-teacher.yaml"
SMOLLM2 = "zoo:smollm2-135m-instruct"
LATENCY_QUESTIONS = 20  # test questions answered one request at a time for the p50 latency
BATCHES = (1, 8, 32)
TARGETS = {"distilled_strict": 0.95, "points_of_teacher": 0.02, "batch32_over_batch1": 8.0}
# SmolLM2 on Mahjong: the spec's LoRA settings from the arithmetic measurements, a step budget.
MAHJONG_LORA = {"learning_rate": 1e-3, "per_device_train_batch_size": 8, "lora_r": 16, "lora_alpha": 32}
log = logging.getLogger("bench.real_models")


class Clock:
    """Wall time of each stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("%s ...", name)
        began = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - began, 1)
        log.info("%s done in %.1fs", name, self.seconds[name])


class StepTimer(TrainerCallback):
    """Seconds of every optimizer step of a training run (forward, backward, update)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._began)

    def median(self) -> float | None:
        # The first steps pay for lazy initialisation; skip them when there are enough.
        steps = self.seconds[2:] if len(self.seconds) > 4 else self.seconds
        return round(statistics.median(steps), 3) if steps else None


# --- sizes ---------------------------------------------------------------------------------------


def smoke_spec(spec: DistillSpec, out: Path) -> DistillSpec:
    """The same spec at a few questions and two training steps, taught by a recorded teacher (no zoo
    build) that answers every question of the splits with the domain's reference trace."""
    assert spec.task is not None
    task = spec.task.model_copy(update={"train_size": 16, "probe_size": 8, "test_size": 8})
    strategy = spec.strategy.model_copy(
        update={
            "prescreen_size": 4,
            "prescreen_demos": 1,
            "max_new_tokens": min(spec.strategy.max_new_tokens, 32),
        }
    )
    rows = [
        {"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)}
        for examples in draw_splits(task).values()  # the splits write_splits will write
        for ex in examples
    ]
    recorded = out / "recorded-teacher.jsonl"
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    return spec.model_copy(
        update={
            "task": task,
            "strategy": strategy,
            "training": spec.training.model_copy(update={"num_train_epochs": 1, "save_steps": 100}),
            "teachers": [ModelCandidate(name="recorded-teacher", kind="stored", model=str(recorded))],
            "serve": spec.serve.model_copy(update={"parity_size": 4}),
        }
    )


# --- the stages, as the flow calls them ----------------------------------------------------------


@dataclass
class Run:
    """What both scenarios share up to training: data, server, models, teacher, pre-screen, traces."""

    spec: DistillSpec
    task: TaskSpec
    domain: Domain
    out: Path
    clock: Clock
    splits: dict[str, list[Example]]
    server: ServerRow
    models: dict[str, ResolvedModel]
    teacher: TeacherChoice
    teacher_backend: Backend
    prescreen: StudentChoice
    mode: Mode
    mode_reason: str
    data: SynthesisReport

    def distil(self, student: ResolvedModel, settings: TrainingSettings) -> tuple[TrainResult, StepTimer]:
        """Train one student on the kept traces (training.method auto unless `settings` says otherwise)."""
        timer = StepTimer()
        tag = f"{student.name}-{settings.method}-e{settings.num_train_epochs:g}-lr{settings.learning_rate:g}"
        with self.clock.stage(f"train_{student.name}"):
            trained = train_student(
                student.model,
                self.data.train_path,
                self.domain,
                settings,
                self.out / f"train-{self.mode}-{tag}",
                seed=self.task.seed,
                callbacks=[timer],
            )
        return trained, timer

    def score(self, name: str, backend: Backend, max_new_tokens: int, latency_n: int) -> dict[str, Any]:
        """Held-out strict/flexible accuracy (batched, as evaluation runs) and one-request-at-a-time p50."""
        params, test = SamplingParams(max_new_tokens=max_new_tokens), self.splits["test"]
        with self.clock.stage(f"evaluate_{name}"):
            result = evaluate(backend, self.domain, test, params, match=self.task.answer_match)
            alone = evaluate(backend, self.domain, test[:latency_n], params, batch_size=1)
        return {
            "n": result.n,
            "strict": result.strict_accuracy,
            "flexible": result.flexible_accuracy,
            "format_warning": result.format_warning,
            "latency_p50_ms": round(alone.latency_p50_s * 1000, 1),
            "result": result,
        }


def setup(spec: DistillSpec, out: Path) -> Run:
    """Splits -> server (PFG) -> models (zoo builds) -> teacher probe -> pre-screen -> synthesis."""
    task, clock = require_runnable(spec), Clock()
    domain, s = get_domain(task), spec.strategy
    with clock.stage("prepare_data"):
        prepared = write_splits(task, out / "data")
        splits = {name: load_examples(prepared.path(name)) for name in ("train", "probe", "test")}
    with clock.stage("select_server"):
        table, _ = load_catalogs(spec.servers.catalog_paths())
        selection = pfg.select_server(table, spec.constraints, spec.servers, with_baselines=False)
        if not selection.feasible:
            raise SystemExit(f"{spec.name}: no server is feasible: {selection.reason}")
        server = choice_of(selection, spec.servers.weights).row
    models = {}
    for role, group in (("teacher", spec.teachers), ("student", spec.students)):
        for candidate in group:
            with clock.stage(f"build_{candidate.name}"):  # the zoo builds on first use
                models[candidate.name] = resolve_model(candidate, role, spec)  # type: ignore[arg-type]
    teachers, students = [models[t.name] for t in spec.teachers], [models[c.name] for c in spec.students]
    with clock.stage("teacher_probe"):
        backends = {t.name: t.backend() for t in teachers}
        teacher = select_teacher(
            [t.candidate for t in teachers],
            backends,
            domain,
            splits["probe"],
            spec.constraints.budget_usd,
            planned_questions(task.train_size, s.num_samples, s.max_attempts),
            server.total_gpu_memory_gb,
            server.cost_per_hour,
            s.max_new_tokens,
            task.answer_match,
        )
    if teacher.chosen is None:
        raise SystemExit(f"{spec.name}: no teacher chosen: {teacher.reason}")
    backend = backends[teacher.chosen]
    with clock.stage("prescreen"):
        demos = make_demos(
            backend, domain, splits["probe"], teacher.probe, s.prescreen_demos, s.max_new_tokens
        )
        screened = select_student(
            [m.candidate for m in students],
            {m.name: m.backend() for m in students},
            domain,
            server.model_dump(),
            spec.constraints,
            spec.training,
            splits["probe"][: s.prescreen_size],
            demos,
            s.prescreen_threshold,
            s.max_new_tokens,
            task.answer_match,
        )
    log.info("pre-screen: %s", screened.reason)
    mode, why = choose_mode(teacher.accuracy or 0.0, s.tau, s.force_mode)
    with clock.stage(f"synthesis_{mode}"):
        data = synthesize(
            backend,
            domain,
            splits["train"],
            mode,
            out / f"synthesis-{mode}",
            s.num_samples,
            s.max_attempts,
            s.temperature,
            s.max_new_tokens,
            seed=0,
            match=task.answer_match,
        )
    log.info("%s: %d kept of %d samples (%s)", mode, data.accepted, data.samples, data.verdicts)
    return Run(
        spec, task, domain, out, clock, splits, server, models, teacher, backend, screened, mode, why, data
    )


# --- performance on SmolLM2 ------------------------------------------------------------------------


def generation_throughput(model_dir: str, prompts: list, new_tokens: int, rounds: int) -> dict[str, Any]:
    """Tokens/s through HFBackend at each batch size (best of `rounds`); the ratio against batch 1."""
    backend = HFBackend(model_dir, name="smollm2-throughput")
    params = SamplingParams(max_new_tokens=new_tokens)
    backend.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up: lazy initialisation
    rates, lengths = {}, {}
    for batch in BATCHES:
        backend.batch_size = batch
        best, n = 0.0, max(batch, 8)  # 8 prompts at batch 1: one short call is noisy
        for _ in range(rounds):
            backend.usage.__init__()  # fresh counters for this measurement
            backend.generate(prompts[:n], params)
            best = max(best, backend.usage.tokens_per_second)
        # Rows that end early count only their own tokens, while the batch runs on: the honest rate.
        rates[str(batch)], lengths[str(batch)] = round(best, 1), round(backend.usage.completion_tokens / n, 1)
        log.info("SmolLM2 generation, batch %d: %.1f tokens/s", batch, best)
    return {
        "new_tokens": new_tokens,
        "rounds": rounds,
        "tokens_per_second": rates,
        "mean_new_tokens": lengths,
        "over_batch1": {b: round(r / rates["1"], 2) for b, r in rates.items()},
    }


def serving_load(run: Run, model_dir: str, evaluation: EvalResult, requests: int, max_tokens: int) -> dict:
    """Serve the merged student on the CPU path (health, smoke, parity), then load it at 1 and 8."""
    test = run.splits["test"]
    sample, expected = parity_sample(evaluation, test, run.spec.serve.parity_size)
    record = serve_student(
        model_dir,
        domain=run.domain,
        parity_examples=sample,
        expected_accuracy=expected,
        served_model_name=SERVED_NAME,
        server_id=run.server.id,
        settings=run.spec.serve.model_copy(update={"backend": "cpu"}),
        max_new_tokens=run.spec.strategy.max_new_tokens,
        match=evaluation.match,
        reuse=False,
    )
    prompts = [run.domain.messages(ex.question) for ex in (test * requests)[:requests]]
    try:
        levels = {str(c): run_level(record.url, prompts, c, max_tokens, 300.0) for c in (1, 8)}
    finally:
        stop_endpoint(record.id)
    return {
        "startup_s": record.startup_s,
        "parity": record.parity.model_dump() if record.parity else None,
        "max_tokens": max_tokens,
        "levels": levels,
    }


# --- scenarios -------------------------------------------------------------------------------------


def student_row(run: Run, model: ResolvedModel, trained: TrainResult, timer: StepTimer, score: dict) -> dict:
    screened = next((p for p in run.prescreen.prescreen if p.name == model.name), None)
    return {
        "name": model.name,
        "model": model.candidate.model,
        "parameters": model.params,
        "prescreen": None
        if screened is None
        else {
            "fewshot_strict": screened.fewshot_strict,
            "fewshot_flexible": screened.fewshot_flexible,
            "zeroshot_strict": screened.zeroshot_strict,
            "zeroshot_flexible": screened.zeroshot_flexible,
            "passed": screened.passed,
        },
        "method": trained.method,
        "train_steps": trained.steps,
        "train_seconds": trained.wall_time_s,
        "step_seconds_median": timer.median(),
        "train_reused": trained.reused,
        "loss_first": trained.loss_first,
        "loss_last": trained.loss_last,
        **{k: v for k, v in score.items() if k != "result"},
    }


def summary(run: Run, spec_path: Path, teacher_score: dict) -> dict[str, Any]:
    """The fields both scenarios report: where, how, what was kept, and the teacher's figures."""
    chosen = run.models[run.teacher.chosen or ""]
    return {
        "spec": str(spec_path.relative_to(ROOT)),
        "options": run.task.options,
        "server": run.server.id,
        "mode": run.mode,
        "mode_reason": run.mode_reason,
        "synthesis": {
            "accepted": run.data.accepted,
            "samples": run.data.samples,
            "coverage": round(run.data.coverage, 4),
        },
        "chosen_student": run.prescreen.chosen,
        "prescreen_reason": run.prescreen.reason,
        "teacher": {
            "name": chosen.name,
            "model": chosen.candidate.model,
            "parameters": chosen.params,
            "probe_accuracy": run.teacher.accuracy,
            **{k: v for k, v in teacher_score.items() if k != "result"},
        },
    }


def scenario_arithmetic(spec: DistillSpec, nano_training: TrainingSettings, out: Path, smoke: bool) -> dict:
    """The example spec: both students on the same traces, then SmolLM2's generation, training and serving."""
    run = setup(spec, out)
    cap, latency_n = spec.strategy.max_new_tokens, 2 if smoke else LATENCY_QUESTIONS
    real, nano = run.models["smollm2"], run.models["nano"]
    rows, served = {}, None
    for student, settings in ((real, spec.training), (nano, nano_training)):
        trained, timer = run.distil(student, settings)
        backend = from_candidate(ModelCandidate(name=student.name, model=trained.model_dir))
        score = run.score(student.name, backend, cap, latency_n)
        rows[student.name] = student_row(run, student, trained, timer, score)
        if student is real:  # the student the pre-screen chooses: the one the flow serves
            served = (trained.model_dir, score["result"])
    teacher_score = run.score("teacher", run.teacher_backend, cap, latency_n)
    with run.clock.stage("generation_throughput"):
        prompts = [run.domain.messages(ex.question) for ex in (run.splits["test"] * 32)[:32]]
        throughput = generation_throughput(real.model, prompts, 4 if smoke else 32, 1 if smoke else 2)
    with run.clock.stage("serving"):
        serving = serving_load(run, *served, 4 if smoke else 32, 8 if smoke else 32)
    report = {
        **summary(run, ARITHMETIC_SPEC, teacher_score),
        "students": rows,
        "nano_recipe": nano_training.model_dump(),
        "performance": {
            "generation": throughput,
            "lora_step_seconds": rows["smollm2"]["step_seconds_median"],
            "lora_max_seq_length": spec.training.max_seq_length,
            "serving": serving,
        },
        "stage_seconds": run.clock.seconds,
    }
    report["verdicts"] = arithmetic_verdicts(report)
    return report


def arithmetic_verdicts(report: dict) -> dict[str, dict[str, Any]]:
    """Each target: met or not, the measured figure and the gap."""
    real, teacher = report["students"]["smollm2"], report["teacher"]
    screened = real["prescreen"] or {}
    prescreen_flexible = max(screened.get("fewshot_flexible", 0.0), screened.get("zeroshot_flexible", 0.0))
    ratio = report["performance"]["generation"]["over_batch1"]["32"]
    gap = teacher["strict"] - real["strict"]

    def verdict(met: bool, measured: str) -> dict[str, Any]:
        return {"met": met, "measured": measured}

    return {
        "smollm2_strict_at_least_95": verdict(
            real["strict"] >= TARGETS["distilled_strict"],
            f"{real['strict']:.1%} strict ({real['strict'] - TARGETS['distilled_strict']:+.1%} vs 95%)",
        ),
        "smollm2_within_2_points_of_teacher": verdict(
            gap <= TARGETS["points_of_teacher"],
            f"{real['strict']:.1%} vs teacher {teacher['strict']:.1%} strict ({-gap:+.1%})",
        ),
        "smollm2_prescreen_flexible_above_0": verdict(
            prescreen_flexible > 0, f"{prescreen_flexible:.1%} (better of few-shot and zero-shot, flexible)"
        ),
        "batch32_at_least_8x_batch1": verdict(
            ratio >= TARGETS["batch32_over_batch1"], f"{ratio:.2f}x batch-1 tokens/s"
        ),
    }


def smollm2_lengths(model_dir: str, domain: Domain, train_path: str) -> dict[str, int]:
    """SmolLM2 tokens of the kept traces: whole rows (prompt + trace) and traces alone."""
    backend = HFBackend(model_dir, name="smollm2-tokenizer")  # the chat template it trains with
    tok = backend.tokenizer
    frame = pd.read_parquet(train_path)
    full, completion = [], []
    for question, trace in zip(frame["question"], frame["completion"], strict=True):
        chat = domain.messages(question) + [{"role": "assistant", "content": trace}]
        full.append(
            len(tok(tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False).input_ids)
        )
        completion.append(len(tok(trace, add_special_tokens=False).input_ids))
    return {
        "rows": len(frame),
        "full_p50": int(np.percentile(full, 50)),
        "full_p95": int(np.percentile(full, 95)),
        "full_max": max(full),
        "completion_p95": int(np.percentile(completion, 95)),
        "completion_max": max(completion),
    }


def scenario_mahjong(spec: DistillSpec, steps: int, out: Path, smoke: bool) -> dict:
    """Weak-teacher injection traces into SmolLM2 (LoRA, a step budget) and nano (the spec's recipe)."""
    run = setup(spec, out)
    real, nano = run.models["smollm2"], run.models["nano"]
    lengths = smollm2_lengths(real.model, run.domain, run.data.train_path)
    # Room for the longest row, in multiples of 64; SmolLM2's generation cap covers the longest trace.
    seq = 64 * math.ceil(lengths["full_max"] / 64)
    real_cap = 16 * math.ceil(lengths["completion_max"] * 1.1 / 16)
    batch = MAHJONG_LORA["per_device_train_batch_size"]
    lora = TrainingSettings(
        method="auto",
        num_train_epochs=steps * batch / lengths["rows"],  # the step budget, as a fraction of an epoch
        max_seq_length=seq,
        save_steps=50,
        **MAHJONG_LORA,
    )
    # Five one-at-a-time requests: SmolLM2 writes ~150 tokens a hand here; latency is not the question.
    cap, latency_n = spec.strategy.max_new_tokens, 2 if smoke else 5
    rows = {}
    for student, settings, limit in ((real, lora, real_cap), (nano, spec.training, cap)):
        trained, timer = run.distil(student, settings)
        backend = from_candidate(ModelCandidate(name=student.name, model=trained.model_dir))
        score = run.score(student.name, backend, limit, latency_n)
        rows[student.name] = {**student_row(run, student, trained, timer, score), "max_new_tokens": limit}
    teacher_score = run.score("teacher", run.teacher_backend, cap, latency_n)
    teacher_strict = teacher_score["strict"]
    return {
        **summary(run, MAHJONG_SPEC, teacher_score),
        "smollm2_lengths": lengths,
        "smollm2_budget": {"steps": steps, "max_seq_length": seq, "max_new_tokens": real_cap, **MAHJONG_LORA},
        "students": rows,
        "over_teacher_strict": {
            name: (r["strict"] / teacher_strict if teacher_strict else None) for name, r in rows.items()
        },
        "stage_seconds": run.clock.seconds,
    }


# --- output ----------------------------------------------------------------------------------------


def print_report(name: str, r: dict) -> None:
    """Readable tables and verdicts on stdout (the JSON line follows them)."""
    print(f"\n## {name}: {r['mode']} ({r['mode_reason']}); server {r['server']}\n")
    print(
        "| model | parameters | few-shot s/f | zero-shot s/f | method | steps | train s | strict | flexible | p50 ms |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    t = r["teacher"]
    print(
        f"| teacher {t['name']} | {t['parameters'] or 0:,} | - | - | - | - | - | "
        f"{t['strict']:.1%} | {t['flexible']:.1%} | {t['latency_p50_ms']} |"
    )
    for s in r["students"].values():
        p = s["prescreen"] or {}
        few = f"{p.get('fewshot_strict', 0):.1%}/{p.get('fewshot_flexible', 0):.1%}" if p else "-"
        zero = f"{p.get('zeroshot_strict', 0):.1%}/{p.get('zeroshot_flexible', 0):.1%}" if p else "-"
        print(
            f"| student {s['name']} | {s['parameters'] or 0:,} | {few} | {zero} | {s['method']} | "
            f"{s['train_steps']} | {s['train_seconds']:.0f} | {s['strict']:.1%} | {s['flexible']:.1%} | "
            f"{s['latency_p50_ms']} |"
        )
    print(f"\nkept traces: {r['synthesis']}")
    if "chosen_student" in r:
        print(f"pre-screen chose: {r['chosen_student']} ({r['prescreen_reason']})")
    if "performance" in r:
        perf = r["performance"]
        gen = perf["generation"]
        print(
            f"\nSmolLM2 generation tokens/s by batch: {gen['tokens_per_second']} "
            f"(x batch 1: {gen['over_batch1']}; {gen['new_tokens']} new tokens)"
        )
        step = perf["lora_step_seconds"]
        print(
            f"LoRA step: {step} s median at max_seq_length {perf['lora_max_seq_length']}"
            if step
            else "LoRA step: not measured (training reused from --out; give a fresh --out to time it)"
        )
        serving = perf["serving"]
        for c, level in serving["levels"].items():
            print(
                f"serving, concurrency {c}: p50 {level['latency_p50_ms']} ms, p95 {level['latency_p95_ms']} ms, "
                f"{level['requests']} requests, {level['errors']} errors"
            )
        print(f"parity: {serving['parity']}")
    if "smollm2_lengths" in r:
        print(f"\nSmolLM2 trace lengths: {r['smollm2_lengths']}; budget {r['smollm2_budget']}")
        print(f"student strict / teacher strict: {r['over_teacher_strict']}")
    for target, v in r.get("verdicts", {}).items():
        print(f"target {target}: {'MET' if v['met'] else 'MISSED'} ({v['measured']})")
    print(
        f"torch threads: {torch.get_num_threads()} (STRATOS_THREADS, else OMP_NUM_THREADS, else idle cores)"
    )
    print("\nstage seconds: " + ", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items()))


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "stratos_threads": stratos.THREADS,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=["arithmetic", "mahjong"], default="arithmetic")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes and a recorded teacher: the path only"
    )
    parser.add_argument("--mahjong-steps", type=int, default=160, help="SmolLM2's LoRA step budget (mahjong)")
    parser.add_argument(
        "--mahjong-test-size", type=int, default=None, help="held-out hands (default: the spec's 400)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="work directory (default /tmp/stratos-bench-real[-smoke])"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", force=True
    )
    out = args.out or Path(f"/tmp/stratos-bench-real{'-smoke' if args.smoke else ''}") / args.scenario
    started, at_start = time.perf_counter(), machine()
    spec = load_spec(ARITHMETIC_SPEC if args.scenario == "arithmetic" else MAHJONG_SPEC)
    if args.scenario == "mahjong":
        students = [
            ModelCandidate(name="nano", model="zoo:nano"),
            ModelCandidate(name="smollm2", model=SMOLLM2),
        ]
        task = require_runnable(spec)
        task = task.model_copy(update={"test_size": args.mahjong_test_size or task.test_size})
        spec = spec.model_copy(update={"students": students, "task": task})
    if args.smoke:
        spec = smoke_spec(spec, out)
        if args.scenario == "mahjong":  # the recorded teacher is always right; injection is the scenario
            spec = spec.model_copy(
                update={"strategy": spec.strategy.model_copy(update={"force_mode": "injection"})}
            )
    if args.scenario == "arithmetic":
        nano = load_spec(NANO_ARITHMETIC_SPEC).training
        if args.smoke:
            nano = nano.model_copy(update={"num_train_epochs": 1, "per_device_train_batch_size": 8})
        report = scenario_arithmetic(spec, nano, out, args.smoke)
    else:
        report = scenario_mahjong(spec, 2 if args.smoke else args.mahjong_steps, out, args.smoke)
    print_report(args.scenario, report)
    print(
        json.dumps(
            {
                "benchmark": "real_models",
                "scenario": args.scenario,
                "smoke": args.smoke,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {**machine(), "load_average_at_start": at_start["load_average"]},
                "report": report,
                "seconds": round(time.perf_counter() - started, 1),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
