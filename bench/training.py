"""Benchmark: student training throughput -- SFT tokens/s with and without packing, GRPO seconds/step.

All in one run, on random-init zoo models of the arithmetic domain (throughput
does not depend on what the weights know), through the same trainer builders
the training stage uses (tasks.train.build_sft_trainer / build_grpo_trainer):

    sft      full fine-tuning, completion-only loss, per size: padded batches in float32, then
             packing=True (TRL's best-fit-decreasing packing into max_seq_length rows,
             padding-free), then padded with bf16 autocast forced (bf16_over_fp32: > 1 where
             the hardware has bf16 units, < 1 where it is emulated), then padded with activation
             checkpointing on (TRL's default; Stratos turns it off: checkpointed_over_off).
             tokens/s counts real (non-pad) tokens the model trained on: the same tokens
             every way, so the figures compare directly.
    grpo     nano model, group size 8, batch 16 completions per step; seconds per step
             (generation + reward + update), averaged over the steps after the first.

    .venv/bin/python bench/training.py [--sizes nano micro] [--rows 512] [--grpo-steps 8]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

from stratos import zoo
from stratos.devices import cpu_has_bf16
from stratos.domains import get_domain
from stratos.domains.base import completion_text
from stratos.spec import TaskSpec, TrainingSettings
from tasks.train import build_grpo_trainer, build_sft_trainer, grpo_rows, sft_rows


class StepTimes(TrainerCallback):
    """Wall-clock time of every optimizer step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.began)


def _load(model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def bench_sft(model_dir: Path, rows, settings: TrainingSettings, work: Path, packing: bool) -> dict:
    model, tokenizer = _load(model_dir)
    timer = StepTimes()
    trainer = build_sft_trainer(model, tokenizer, rows, settings, work, "full", 0, [timer], packing=packing)
    trainer.remove_callback(PrinterCallback)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])  # real tokens, no padding yet
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    return {
        "packing": packing,
        "rows_in": len(rows),
        "rows_trained": len(trainer.train_dataset),
        "steps": result.global_step,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens * settings.num_train_epochs / seconds, 1),
    }


def bench_grpo(model_dir: Path, domain, examples, work: Path, steps: int) -> dict:
    model, tokenizer = _load(model_dir)
    settings = TrainingSettings(
        method="grpo",
        learning_rate=1e-4,
        per_device_train_batch_size=16,
        num_generations=8,
        save_steps=10_000,
        num_train_epochs=1,
    )
    frame_rows = [{"question": ex.question, "gold": ex.answer} for ex in examples[: steps * 2]]
    import pandas as pd

    timer = StepTimes()
    rows = grpo_rows(domain, pd.DataFrame(frame_rows))
    trainer = build_grpo_trainer(
        model, tokenizer, domain, rows, settings, work, 0, [timer], max_completion_length=32
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    later = timer.times[1:] or timer.times  # the first step pays one-off setup
    return {
        "size": "nano",
        "steps": len(timer.times),
        "num_generations": 8,
        "completions_per_step": 16,
        "max_completion_length": 32,
        "seconds_per_step": round(sum(later) / len(later), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["nano", "micro"], choices=sorted(zoo.SIZES))
    parser.add_argument("--rows", type=int, default=512, help="SFT training rows per run (one epoch)")
    parser.add_argument("--grpo-steps", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": 3}))
    examples = domain.load("train", args.rows, seed=0)
    import pandas as pd

    frame = pd.DataFrame(
        [{"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)} for ex in examples]
    )
    rows = sft_rows(domain, frame)
    settings = TrainingSettings(
        method="full",
        learning_rate=1e-3,
        num_train_epochs=1,
        per_device_train_batch_size=16,
        save_steps=10_000,
        max_seq_length=256,
        bf16=False,  # the float32 baseline; each size is also run with bf16 autocast forced
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stratos-bench-train-") as tmp:
        work = Path(tmp)
        sft = {}
        for size in args.sizes:
            model_dir = zoo.random_model(domain, size)
            runs = [bench_sft(model_dir, rows, settings, work / f"{size}-{p}", p) for p in (False, True)]
            autocast = settings.model_copy(update={"bf16": True})  # forced, native here or not
            bf16 = bench_sft(model_dir, rows, autocast, work / f"{size}-bf16", False)
            recompute = settings.model_copy(update={"activation_checkpointing": True})  # TRL's own default
            checkpointed = bench_sft(model_dir, rows, recompute, work / f"{size}-ckpt", False)
            print(f"{size}: {runs} bf16 {bf16} checkpointed {checkpointed}", file=sys.stderr)
            sft[size] = {
                "parameters": zoo.count_parameters(model_dir),
                "padded": runs[0],
                "packed": runs[1],
                "packed_over_padded": round(runs[1]["tokens_per_second"] / runs[0]["tokens_per_second"], 2),
                "padded_bf16": bf16,
                "bf16_over_fp32": round(bf16["tokens_per_second"] / runs[0]["tokens_per_second"], 2),
                "padded_checkpointed": checkpointed,
                "checkpointed_over_off": round(
                    checkpointed["tokens_per_second"] / runs[0]["tokens_per_second"], 2
                ),
            }
        grpo = bench_grpo(zoo.random_model(domain, "nano"), domain, examples, work / "grpo", args.grpo_steps)
        print(f"grpo: {grpo}", file=sys.stderr)
    report = {
        "benchmark": "training",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_has_bf16(),
        "sft_batch_size": settings.per_device_train_batch_size,
        "sft": sft,
        "grpo": grpo,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
