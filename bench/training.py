"""Benchmark: student training throughput -- SFT tokens/s with and without packing, GRPO seconds/step.

All in one run, on random-init zoo models of the arithmetic domain (throughput
does not depend on what the weights know), through the same trainer builders
the training stage uses (tasks.train.build_sft_trainer / build_grpo_trainer):

    sft      full fine-tuning, completion-only loss, per size: padded batches, then
             packing=True (TRL's best-fit-decreasing packing into max_seq_length rows,
             padding-free). tokens/s counts real (non-pad) tokens the model trained on:
             the same tokens either way, so the two figures compare directly.
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
    return {"packing": packing, "rows_in": len(rows), "rows_trained": len(trainer.train_dataset),
            "steps": result.global_step, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens * settings.num_train_epochs / seconds, 1)}  # fmt: skip


def bench_grpo(model_dir: Path, domain, examples, work: Path, steps: int) -> dict:
    model, tokenizer = _load(model_dir)
    settings = TrainingSettings(method="grpo", learning_rate=1e-4, per_device_train_batch_size=16, num_generations=8,
                                save_steps=10_000, num_train_epochs=1)  # fmt: skip
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
    return {"size": "nano", "steps": len(timer.times), "num_generations": 8, "completions_per_step": 16,
            "max_completion_length": 32, "seconds_per_step": round(sum(later) / len(later), 3)}  # fmt: skip


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

    frame = pd.DataFrame([{"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)}
                          for ex in examples])  # fmt: skip
    rows = sft_rows(domain, frame)
    settings = TrainingSettings(method="full", learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=16,
                                save_steps=10_000, max_seq_length=256)  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stratos-bench-train-") as tmp:
        work = Path(tmp)
        sft = {}
        for size in args.sizes:
            model_dir = zoo.random_model(domain, size)
            runs = [bench_sft(model_dir, rows, settings, work / f"{size}-{p}", p) for p in (False, True)]
            print(f"{size}: {runs}", file=sys.stderr)
            sft[size] = {"parameters": zoo.count_parameters(model_dir), "padded": runs[0], "packed": runs[1],
                         "packed_over_padded": round(runs[1]["tokens_per_second"] / runs[0]["tokens_per_second"], 2)}  # fmt: skip
        grpo = bench_grpo(zoo.random_model(domain, "nano"), domain, examples, work / "grpo", args.grpo_steps)
        print(f"grpo: {grpo}", file=sys.stderr)
    report = {
        "benchmark": "training",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "sft_batch_size": settings.per_device_train_batch_size,
        "sft": sft,
        "grpo": grpo,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
