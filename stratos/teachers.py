"""Training the zoo's teachers: real models, trained from random init on a domain, then measured.

A teacher learns two formats from the domain's reference rationales:
    forward    domain.messages(q)              -> rationale + "#### answer"
    injection  domain.injection_messages(q, a) -> rationale that derives the given answer
The strength of a teacher comes from its recipe, never from scripted output:
a "strong" teacher sees every question in both formats and trains until a
held-out validation slice is solved (or its epochs run out); a "weak" teacher
sees every question in the injection format but only a small share in the
forward format, so it writes good answer-conditioned rationales yet solves
poorly on its own -- the situation Knowledge Injection is for. The accuracy
in meta.json is what greedy decoding on the domain's test split measures.

Trainer choice: TRL's SFTTrainer on a conversational prompt/completion
dataset, which gives completion-only loss through the chat template (the loss
covers the assistant answer, not the prompt) -- the same trainer the student
stage uses. On CPU it needs use_cpu=True (its bf16 default crashes without a
GPU otherwise; with use_cpu, bf16 is CPU autocast, which a recipe may turn on)
and turns activation checkpointing off (TRL defaults to on).

Measured on the shared 2-core machine (OMP_NUM_THREADS=1; with two torch
threads competing with other processes a step was ~8x slower): strong
2-digit addition, "micro" -> 96% test accuracy in ~13 min; weak Mahjong
(10 tiles, one suit), "micro" in bf16 -> 12% test accuracy with 56% of
answer-conditioned rationales valid, 660 steps in 5.2 min with two threads on
an idle machine, 8.7 min with one (the fp32 recipe with a 10% forward share
took 10.5-15 min for 14.5% / 52%). The weak teacher is on the
path of the first, cold run of examples/mahjong-weak-teacher.yaml, hence the
cheaper recipe; bench/quality.py measures it.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import SFTConfig, SFTTrainer

from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend
from stratos.checkpoints import Progress
from stratos.domains.base import Domain, Example, completion_text

log = logging.getLogger(__name__)

# Every knob of a teacher recipe; the whole dict is part of the zoo cache key.
RECIPES: dict[str, dict[str, Any]] = {
    "strong": {
        "size": "micro",
        "train_questions": 2000,  # questions drawn from the train split
        "forward_share": 1.0,  # share of them also trained in the forward format
        "epochs": 12,  # upper bound; training stops once validation reaches `target`
        "learning_rate": 2e-3,  # from-scratch tiny models want a far larger rate than fine-tuning
        "batch_size": 32,
        "target": 0.97,  # validation forward accuracy that ends training early
        "eval_every": 200,  # steps between validation checks
        "val_size": 100,
        "test_size": 200,
    },
    "weak": {
        "size": "micro",  # "nano" reached only 41-47% valid rationales in five recipes of up to 1,380 steps
        "train_questions": 2000,
        "forward_share": 0.05,  # forward solving seen on 5% of the questions only (10%: 14.5-15.5% accuracy)
        "epochs": 10,  # the full schedule: the injection format must be learnt well (8 epochs: 48% valid)
        "learning_rate": 2e-3,
        "batch_size": 32,
        # bf16 where native (stratos.devices): on an AVX512_BF16 CPU autocast was ~8% faster with quality in
        # the band (56% valid, 12% accuracy); on an AVX2-only CPU it ran at 0.08x of float32's tokens/s, so float32 there
        "bf16": "auto",
        "target": None,  # no early stop, so no validation checks either (they only cost build time)
        "eval_every": 0,
        "val_size": 100,
        "test_size": 200,
    },
    # A "pretrained" student: a short, fixed budget of forward solving, no injection format. It stands
    # in for a hub base model that already has some aptitude for the task, which is what the
    # pre-screen is meant to detect (bench/quality.py --scenario prescreen); `size` is the student's.
    "base": {
        "size": "nano",
        "train_questions": 1600,
        "forward_share": 1.0,
        "injection": False,  # forward rows only
        "epochs": 5,  # 250 steps: partial skill that grows with size, far from the teacher
        "learning_rate": 2e-3,
        "batch_size": 32,
        "target": None,
        "eval_every": 0,
        "val_size": 100,
        "test_size": 200,
    },
}


def teacher_examples(domain: Domain, recipe: dict[str, Any], seed: int) -> dict[str, list[Example]]:
    """Train, validation (held out of the train split) and test examples for a recipe."""
    drawn = domain.load("train", recipe["train_questions"] + recipe["val_size"], seed)
    # A small user file has fewer rows than the recipe asks for: validation keeps its share anyway.
    n = min(recipe["train_questions"], len(drawn) - min(recipe["val_size"], len(drawn) // 5))
    return {"train": drawn[:n], "val": drawn[n:], "test": domain.load("test", recipe["test_size"], seed)}


def sft_rows(
    domain: Domain, examples: list[Example], forward_share: float, injection: bool = True
) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows: injection for every example (if asked), forward for a share."""
    rows = []
    n_forward = round(len(examples) * forward_share)
    for k, ex in enumerate(examples):
        answer = [{"role": "assistant", "content": completion_text(ex.rationale, ex.answer)}]
        if injection:
            rows.append({"prompt": domain.injection_messages(ex.question, ex.answer), "completion": answer})
        if k < n_forward:
            rows.append({"prompt": domain.messages(ex.question), "completion": answer})
    return rows


def forward_accuracy(
    backend: HFBackend, domain: Domain, examples: list[Example], max_new_tokens: int
) -> float:
    """Share of questions the model answers correctly on its own (greedy)."""
    params = SamplingParams(max_new_tokens=max_new_tokens)
    outs = backend.generate([domain.messages(ex.question) for ex in examples], params)
    hits = [
        domain.score(domain.extract(out[0].text), ex.answer) for out, ex in zip(outs, examples, strict=True)
    ]
    return sum(hits) / max(len(examples), 1)


def injection_validity(
    backend: HFBackend, domain: Domain, examples: list[Example], max_new_tokens: int
) -> float:
    """Share of answer-conditioned rationales that end in the given answer and pass the verifier."""
    params = SamplingParams(max_new_tokens=max_new_tokens)
    outs = backend.generate([domain.injection_messages(ex.question, ex.answer) for ex in examples], params)
    good = [
        domain.score(domain.extract(out[0].text), ex.answer) and domain.verify(ex, out[0].text)
        for out, ex in zip(outs, examples, strict=True)
    ]
    return sum(good) / max(len(examples), 1)


class _ProgressAndTarget(Progress):
    """Progress logging (loss, ETA) plus a validation check every `every` steps that stops at `target`."""

    def __init__(self, check=None, every: int = 0, target: float | None = None):
        super().__init__(artifact_key="zoo-build-progress")
        self.check, self.every, self.target = check, every, target
        self.checks: list[dict[str, float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not (self.check and self.every and state.global_step % self.every == 0):
            return
        model.eval()
        accuracy = self.check(model)
        model.train()
        self.checks.append({"step": state.global_step, "val_accuracy": accuracy})
        log.info("step %d validation accuracy %.3f", state.global_step, accuracy)
        if self.target is not None and accuracy >= self.target:
            control.should_training_stop = True


def _max_new_tokens(tokenizer, rows: list[dict[str, Any]]) -> int:
    longest = max(len(tokenizer(r["completion"][0]["content"])["input_ids"]) for r in rows)
    return int(longest * 1.25) + 8  # room for a slightly longer answer, not for endless babble


def train_and_measure(
    domain: Domain,
    base: Path,
    out_dir: Path,
    recipe: dict[str, Any],
    seed: int,
    examples: dict[str, list[Example]],
) -> dict[str, Any]:
    """Fine-tune `base` fully on the recipe's data, save it in `out_dir`, return measured metadata."""
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    injection = recipe.get("injection", True)
    rows = sft_rows(domain, examples["train"], recipe["forward_share"], injection)
    max_new = _max_new_tokens(tokenizer, rows)
    # The evaluator gets its own tokenizer copy: it switches to left padding.
    evaluator = HFBackend.from_loaded(
        model, copy.deepcopy(tokenizer), f"teacher-{domain.name}", batch_size=64
    )
    progress = _ProgressAndTarget(
        lambda _: forward_accuracy(evaluator, domain, examples["val"], max_new),
        recipe["eval_every"],
        recipe["target"],
    )
    steps_per_epoch = -(-len(rows) // recipe["batch_size"])
    config = SFTConfig(
        output_dir=str(out_dir / "trainer"),
        per_device_train_batch_size=recipe["batch_size"],
        num_train_epochs=recipe["epochs"],
        learning_rate=recipe["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps_per_epoch // 2),
        weight_decay=0.0,
        logging_steps=max(1, steps_per_epoch // 2),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        activation_checkpointing=False,  # TRL's default recomputes every forward: memory these models do not need
        use_cpu=True,
        bf16=recipe.get("bf16", False),  # with use_cpu: CPU autocast (resolved from "auto" by the zoo)
        completion_only_loss=True,
        max_length=1024,
        seed=seed,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[progress],
    )
    trainer.remove_callback(PrinterCallback)  # _ProgressAndTarget logs one line per interval instead
    started = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    accuracy = forward_accuracy(evaluator, domain, examples["test"], max_new)
    validity = injection_validity(evaluator, domain, examples["test"], max_new)
    log.info(
        "teacher %s: test accuracy %.3f, injection validity %.3f, %.0fs training",
        domain.name,
        accuracy,
        validity,
        train_seconds,
    )
    return {
        "data": {
            "domain": domain.name,
            "train_questions": len(examples["train"]),
            "forward_rows": len(rows) - (len(examples["train"]) if injection else 0),
            "injection_rows": len(examples["train"]) if injection else 0,
            "val_questions": len(examples["val"]),
            "test_questions": len(examples["test"]),
        },
        "steps": result.global_step,
        "train_seconds": round(train_seconds, 1),
        "loss_first": progress.losses[0] if progress.losses else None,
        "loss_last": progress.losses[-1] if progress.losses else None,
        "validation": progress.checks,
        "max_new_tokens": max_new,
        "test_accuracy": accuracy,
        "injection_validity": validity,
    }
