"""Stage 5: train the student on the synthesized data (LoRA-SFT, full fine-tuning or GRPO).

One linear recipe: check inputs -> load -> build the trainer -> train (resuming
from the last complete checkpoint) -> save -> write meta.json.

Methods (TrainingSettings.method, or the `method` argument):
    lora  peft LoRA adapters + trl SFTTrainer; loss on the completion only
    full  every weight trained with SFTTrainer; for small or randomly initialised
          students, where LoRA on a random base learns almost nothing
    grpo  trl GRPOTrainer on the training questions, rewarded by the domain:
          correctness (domain.score of the extracted answer against gold) and
          format (the completion ends with a '#### <answer>' line); LoRA when the
          student is above the full-fine-tuning size, full weights otherwise
    auto  tasks.select_student.training_method: full up to its size limit, else lora

SFT rows are conversational prompt/completion pairs (prompt = domain.messages,
completion = the teacher's accepted trace), so SFTTrainer renders them with the
student's chat template and masks the prompt out of the loss.

Artifacts under out_dir (the stage's artifact, handed to evaluation/serving):
    checkpoints/   Trainer checkpoints every save_steps (+ run.json: which run they belong to)
    model/         the servable model: LoRA merged into the base, or the fully trained weights
    adapter/       the LoRA adapter alone (lora, and grpo with LoRA)
    train_log.json the Trainer's log history (loss, learning rate, rewards per logged step)
    meta.json      written last: base model, data hash, method, hyperparameters, steps,
                   wall time, first/last loss, code version; its presence marks the run finished

A re-run with the same inputs returns the finished out_dir as is. A re-run after
an interruption resumes from the newest complete checkpoint: the Trainer restores
step counter, optimizer, scheduler and RNG state and skips the batches already
seen in the current epoch, so it finishes at the same total step count with the
same data order as an uninterrupted run (tests/test_train.py checks both).

Devices: on CUDA the same code trains in bf16; on CPU it sets use_cpu and bf16=False
(TRL's bf16 default crashes without a GPU) unless training.bf16 asks for CPU bf16
autocast, which is faster where the CPU has bf16 units. Gradient checkpointing stays off:
it trades compute for memory that these models do not need.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from datasets import Dataset
from prefect import task
from prefect.cache_policies import NO_CACHE
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

import stratos
from stratos.checkpoints import Progress, last_complete_checkpoint, previous_wall_time
from stratos.domains.base import Domain
from stratos.estimates import count_params, load_config
from stratos.files import file_digest, write_json_atomic
from stratos.rewards import REWARD_WEIGHTS, domain_rewards
from stratos.spec import TrainingSettings
from tasks.select_student import FULL_FINETUNE_MAX_PARAMS, training_method

log = logging.getLogger(__name__)

# LoRA targets per architecture: every attention and MLP projection (adapting all
# linear layers beats attention-only at the same rank). Other architectures fall
# back to peft's own per-model defaults (target_modules=None).
LORA_TARGETS: dict[str, list[str]] = {
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
SFT_COLUMNS = ("question", "completion")
KEEP_CHECKPOINTS = 2  # older ones are deleted once a newer one is complete


@dataclass
class TrainResult:
    """Where the trained student is and what training took."""

    out_dir: str
    model_dir: str  # servable model (merged for LoRA)
    adapter_dir: str | None  # LoRA adapter, None for full weights
    method: str
    steps: int
    wall_time_s: float  # all runs of this training together, resumed ones included
    loss_first: float | None
    loss_last: float | None
    resumed_from_step: int  # 0 for a fresh run
    reused: bool  # True when a finished out_dir was returned without training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- inputs ------------------------------------------------------------------------------


def check_inputs(base_model: str | Path, train_parquet: str | Path, method: str) -> tuple[Path, pd.DataFrame]:
    """Validate the base model path and the training table before any model is loaded."""
    base = Path(base_model).expanduser()
    if not (base / "config.json").is_file():
        raise FileNotFoundError(
            f"base_model '{base_model}' has no config.json; give a directory written by save_pretrained "
            "(e.g. stratos.zoo.random_model) or the selected student's local path"
        )
    data_path = Path(train_parquet).expanduser()
    if not data_path.is_file():
        raise FileNotFoundError(
            f"train_parquet '{train_parquet}' does not exist; run the synthesis stage first (it writes train.parquet)"
        )
    frame = pd.read_parquet(data_path)
    needed = ("question", "gold") if method == "grpo" else SFT_COLUMNS
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"train_parquet '{data_path}' lacks column '{missing[0]}' (has {list(frame.columns)}); "
            "use the train.parquet written by tasks.synthesize"
        )
    if frame.empty:
        raise ValueError(
            f"train_parquet '{data_path}' has no rows: synthesis accepted no trace. Raise strategy.num_samples "
            "or max_attempts, or use a stronger teacher"
        )
    return base, frame


def resolve_method(base: Path, settings: TrainingSettings, method: str | None) -> str:
    """The explicit `method`, else settings.method, with 'auto' decided by the student's size."""
    choice = method or settings.method
    if choice not in ("auto", "lora", "full", "grpo"):
        raise ValueError(f"method '{choice}' is not a training method; use auto, lora, full or grpo")
    if choice != "auto":
        return choice
    return training_method(count_params(load_config(base)), settings)


def code_version() -> dict[str, str | None]:
    """stratos.__version__ and the git commit of the checkout, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"stratos": stratos.__version__, "git_commit": commit or None}


def sft_rows(domain: Domain, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows: completion-only loss comes from this shape."""
    return [
        {"prompt": domain.messages(q), "completion": [{"role": "assistant", "content": c}]}
        for q, c in zip(frame["question"], frame["completion"], strict=True)
    ]


def grpo_rows(domain: Domain, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per distinct question; `gold` reaches the reward functions as a keyword argument."""
    unique = frame.drop_duplicates("question")
    return [
        {"prompt": domain.messages(q), "gold": g}
        for q, g in zip(unique["question"], unique["gold"], strict=True)
    ]


def _run_key(
    base: Path, data_hash: str, method: str, settings: TrainingSettings, seed: int
) -> dict[str, Any]:
    return {"base_model": str(base.resolve()), "data_sha256": data_hash, "method": method,
            "hyperparameters": settings.model_dump(), "seed": seed}  # fmt: skip


def _claim(out: Path, key: dict[str, Any]) -> None:
    """Tie out_dir's checkpoints to one run, so a resume never continues someone else's training."""
    marker = out / "checkpoints" / "run.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous != key:
            changed = sorted(k for k in key if previous.get(k) != key[k])
            raise ValueError(
                f"out_dir '{out}' holds checkpoints of a different training run ({', '.join(changed)} differ); "
                "delete the directory or choose another out_dir"
            )
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, key)


# --- trainers ------------------------------------------------------------------------------


def _device_args(bf16: bool | None) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    auto = cuda and torch.cuda.is_bf16_supported()
    return {
        "use_cpu": not cuda,
        "bf16": auto if bf16 is None else bf16,  # with use_cpu: CPU autocast to bf16, weights stay fp32
        "gradient_checkpointing": False,
    }


def log_interval(save_steps: int, total_steps: int, lines: int = 50) -> int:
    """Steps between loss logs: about `lines` a run, at a divisor of save_steps, so a resumed run's
    log lines up with an uninterrupted one at every logged step (gcd would give 1 for, say, 200 and 17)."""
    wanted = max(1, total_steps // lines)
    return max(d for d in range(1, min(wanted, save_steps) + 1) if save_steps % d == 0)


def _common_args(out: Path, settings: TrainingSettings, total_steps: int, seed: int) -> dict[str, Any]:
    logging_steps = log_interval(settings.save_steps, total_steps)
    return {
        "output_dir": str(out / "checkpoints"),
        "learning_rate": settings.learning_rate,
        "num_train_epochs": settings.num_train_epochs,
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, total_steps // 20),
        "weight_decay": 0.0,
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": settings.save_steps,
        "save_total_limit": KEEP_CHECKPOINTS,
        "report_to": "none",
        "disable_tqdm": True,  # the Progress callback logs instead of redrawing a bar in worker logs
        "seed": seed,
        **_device_args(settings.bf16),
    }


def lora_config(model, settings: TrainingSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=LORA_TARGETS.get(model.config.model_type),
        task_type="CAUSAL_LM",
    )


def build_sft_trainer(model, tokenizer, rows: list[dict[str, Any]], settings: TrainingSettings, out: Path,
                      method: str, seed: int, callbacks: list, packing: bool = False):  # fmt: skip
    """SFTTrainer for LoRA or full fine-tuning (bench/training.py also uses it, with packing)."""
    from trl import SFTConfig, SFTTrainer

    total = math.ceil(settings.num_train_epochs * math.ceil(len(rows) / settings.per_device_train_batch_size))
    config = SFTConfig(
        **_common_args(out, settings, total, seed),
        completion_only_loss=True,
        max_length=settings.max_seq_length,
        packing=packing,
    )
    peft_config = lora_config(model, settings) if method == "lora" else None
    return SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=peft_config, callbacks=callbacks)  # fmt: skip


def check_grpo_batch(settings: TrainingSettings) -> None:
    """Every GRPO step scores whole groups, so the batch must hold a whole number of them."""
    batch, group = settings.per_device_train_batch_size, settings.num_generations
    if batch % group:
        raise ValueError(
            f"training.per_device_train_batch_size ({batch}) must be a multiple of training.num_generations "
            f"({group}): every step scores whole groups; set it to {group * max(1, batch // group)}"
        )


def build_grpo_trainer(model, tokenizer, domain: Domain, rows: list[dict[str, Any]], settings: TrainingSettings,
                       out: Path, seed: int, callbacks: list, max_completion_length: int):  # fmt: skip
    """GRPOTrainer with the domain's rewards; LoRA above the full-fine-tuning size."""
    from trl import GRPOConfig, GRPOTrainer

    check_grpo_batch(settings)
    batch, group = settings.per_device_train_batch_size, settings.num_generations
    total = math.ceil(settings.num_train_epochs * math.ceil(len(rows) * group / batch))
    config = GRPOConfig(
        **_common_args(out, settings, total, seed),
        num_generations=group,
        beta=settings.beta,
        max_completion_length=max_completion_length,
        reward_weights=list(REWARD_WEIGHTS.values()),
    )
    big = sum(p.numel() for p in model.parameters()) > FULL_FINETUNE_MAX_PARAMS
    return GRPOTrainer(model=model, reward_funcs=domain_rewards(domain), args=config,
                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                       peft_config=lora_config(model, settings) if big else None, callbacks=callbacks)  # fmt: skip


def _completion_budget(tokenizer, frame: pd.DataFrame, settings: TrainingSettings) -> int:
    """GRPO generation cap: room for the longest teacher trace plus a quarter, within max_seq_length."""
    if "completion" not in frame.columns:
        return settings.max_seq_length
    longest = max(len(tokenizer(str(c))["input_ids"]) for c in frame["completion"])
    return min(settings.max_seq_length, int(longest * 1.25) + 8)


# --- outputs -------------------------------------------------------------------------------


def save_outputs(model, tokenizer, out: Path) -> tuple[Path, Path | None]:
    """Write model/ (merged for LoRA) and adapter/ under temporary names, then rename into place."""
    staging = out / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    is_peft = hasattr(model, "merge_and_unload")
    if is_peft:
        model.save_pretrained(staging / "adapter")
        tokenizer.save_pretrained(staging / "adapter")
        model = model.merge_and_unload()  # base + scaled B@A folded into plain weights: servable by anything
    model.save_pretrained(staging / "model")
    tokenizer.save_pretrained(staging / "model")
    for name in ("model", "adapter"):
        shutil.rmtree(out / name, ignore_errors=True)  # a leftover from a run killed while saving
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    staging.rmdir()
    return out / "model", (out / "adapter" if is_peft else None)


def _reuse(out: Path, key: dict[str, Any]) -> TrainResult:
    meta = json.loads((out / "meta.json").read_text())
    if meta.get("key") != key:
        raise ValueError(
            f"out_dir '{out}' already holds a finished training with other inputs (base model, data, method "
            "or hyperparameters differ); delete it or choose another out_dir"
        )
    log.info("training already finished in %s; reusing it", out)
    return TrainResult(**{**meta["result"], "reused": True})


# --- the stage -------------------------------------------------------------------------------


def train_student(
    base_model: str | Path,
    train_parquet: str | Path,
    domain: Domain,
    settings: TrainingSettings,
    out_dir: str | Path,
    method: str | None = None,
    seed: int = 0,
    callbacks: list[TrainerCallback] | None = None,
) -> TrainResult:
    """Train `base_model` on `train_parquet` into `out_dir` (see the module docstring); resumes and reuses.

    Args:
        method: overrides settings.method (lora, full, grpo or auto).
        callbacks: extra TrainerCallbacks (observers; the tests use one to slow training down).
    """
    method = method or settings.method
    base, frame = check_inputs(base_model, train_parquet, "grpo" if method == "grpo" else "sft")
    method = resolve_method(base, settings, method)
    if method == "grpo":
        check_grpo_batch(settings)
    data_path = Path(train_parquet).expanduser()
    out = Path(out_dir).expanduser()
    key = _run_key(base, file_digest(data_path)[1], method, settings, seed)
    if (out / "meta.json").is_file():
        return _reuse(out, key)
    _claim(out, key)
    resume = last_complete_checkpoint(out / "checkpoints")
    previous = previous_wall_time(resume)

    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.chat_template:
        raise ValueError(f"base_model '{base}' has no chat template; use a chat/instruct model or set one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # float32 master weights; on GPU the Trainer's bf16 autocast does the mixed precision.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    progress = Progress(previous)
    hooks = [progress, *(callbacks or [])]
    if method == "grpo":
        trainer = build_grpo_trainer(model, tokenizer, domain, grpo_rows(domain, frame), settings, out, seed,
                                     hooks, _completion_budget(tokenizer, frame, settings))  # fmt: skip
    else:
        trainer = build_sft_trainer(
            model, tokenizer, sft_rows(domain, frame), settings, out, method, seed, hooks
        )
    trainer.remove_callback(PrinterCallback)  # Progress logs each step once, with ETA
    log.info("training %s (%s) on %d rows%s", base.name, method, len(frame),
             f", resuming from {resume.name}" if resume else "")  # fmt: skip
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = previous + progress.elapsed()

    model_dir, adapter_dir = save_outputs(trainer.model, tokenizer, out)
    history = trainer.state.log_history
    write_json_atomic(out / "train_log.json", {"log_history": history})
    losses = [h["loss"] for h in history if "loss" in h]
    outcome = TrainResult(
        out_dir=str(out), model_dir=str(model_dir), adapter_dir=str(adapter_dir) if adapter_dir else None,
        method=method, steps=result.global_step, wall_time_s=round(wall, 2),
        loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None,
        resumed_from_step=progress.start_step, reused=False,
    )  # fmt: skip
    rewards = [h["reward"] for h in history if "reward" in h]
    meta = {
        "key": key, "result": outcome.to_dict(), "base_model": str(base), "data": str(data_path),
        "data_sha256": key["data_sha256"], "rows": len(frame), "method": method, "hyperparameters": key["hyperparameters"],
        "seed": seed, "steps": outcome.steps, "wall_time_s": outcome.wall_time_s,
        "loss_first": outcome.loss_first, "loss_last": outcome.loss_last,
        "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "code_version": code_version(),
    }  # fmt: skip
    write_json_atomic(out / "meta.json", meta)  # last: its presence marks the run finished
    log.info("trained %s: %d steps in %.0fs, loss %s -> %s", method, outcome.steps, wall,
             outcome.loss_first, outcome.loss_last)  # fmt: skip
    return outcome


# Retried once: a crash (e.g. a preempted worker) resumes from the last checkpoint.
train_task = task(train_student, name="train-student", retries=1, cache_policy=NO_CACHE)
