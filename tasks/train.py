"""Stage 8, train: the student on the synthesized data (LoRA-SFT, full fine-tuning or GRPO).

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

Devices: on CPU it sets use_cpu (TRL's bf16 default crashes without a GPU otherwise).
training.bf16 left empty trains in bf16 where that is native (a bf16 GPU, a CPU with
AVX512_BF16/AMX: CPU autocast) and in float32 elsewhere (stratos.devices); true forces it.
Activation (gradient) checkpointing is off unless training.activation_checkpointing turns it on:
TRL's trainers default to on, which recomputes every forward for memory these models do not need.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from datasets import Dataset
from prefect import task
from pydantic import BaseModel, Field
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

import stratos
from stratos import zoo
from stratos.backends.hf import ensure_chat_template
from stratos.checkpoints import Progress, last_complete_checkpoint, previous_wall_time
from stratos.devices import resolve_bf16
from stratos.domains import get_domain
from stratos.domains.base import Domain
from stratos.estimates import FULL_FINETUNE_MAX_PARAMS, count_params, load_config
from stratos.files import content_digest, file_digest, write_json_atomic
from stratos.jobs import Ran, Runner, StageJob, dispatched, locked_work_dir, transient
from stratos.ledger import Budget, BudgetExhausted, Entry
from stratos.rewards import REWARD_WEIGHTS, domain_rewards
from stratos.spec import TaskSpec, TrainingSettings
from stratos.storage import fetch, from_uri
from tasks.build_models import ResolvedModel
from tasks.select_student import training_method

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
    """The explicit `method`, else settings.method, with 'auto' decided by how the student was made and its size."""
    choice = method or settings.method
    if choice not in ("auto", "lora", "full", "grpo"):
        raise ValueError(f"method '{choice}' is not a training method; use auto, lora, full or grpo")
    if choice != "auto":
        return choice
    return training_method(count_params(load_config(base)), settings, zoo.from_scratch(base))


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
    return {
        "base_model": str(base.resolve()),
        "data_sha256": data_hash,
        "method": method,
        "hyperparameters": settings.model_dump(),
        "seed": seed,
    }


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
    return {
        "use_cpu": not torch.cuda.is_available(),
        "bf16": resolve_bf16(bf16),  # with use_cpu: CPU autocast to bf16, weights stay fp32
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
        "activation_checkpointing": settings.activation_checkpointing,  # TRL's default is on
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


def build_sft_trainer(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    settings: TrainingSettings,
    out: Path,
    method: str,
    seed: int,
    callbacks: list,
    packing: bool = False,
):
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
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def check_grpo_batch(settings: TrainingSettings) -> None:
    """Every GRPO step scores whole groups, so the batch must hold a whole number of them."""
    batch, group = settings.per_device_train_batch_size, settings.num_generations
    if batch % group:
        raise ValueError(
            f"training.per_device_train_batch_size ({batch}) must be a multiple of training.num_generations "
            f"({group}): every step scores whole groups; set it to {group * max(1, batch // group)}"
        )


def build_grpo_trainer(
    model,
    tokenizer,
    domain: Domain,
    rows: list[dict[str, Any]],
    settings: TrainingSettings,
    out: Path,
    seed: int,
    callbacks: list,
    max_completion_length: int,
):
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
    return GRPOTrainer(
        model=model,
        reward_funcs=domain_rewards(domain),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(model, settings) if big else None,
        callbacks=callbacks,
    )


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
    ensure_chat_template(tokenizer, base.name)  # saved with the trained model: serving renders the same
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # float32 master weights; on GPU the Trainer's bf16 autocast does the mixed precision.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    progress = Progress(previous)
    hooks = [progress, *(callbacks or [])]
    if method == "grpo":
        trainer = build_grpo_trainer(
            model,
            tokenizer,
            domain,
            grpo_rows(domain, frame),
            settings,
            out,
            seed,
            hooks,
            _completion_budget(tokenizer, frame, settings),
        )
    else:
        trainer = build_sft_trainer(
            model, tokenizer, sft_rows(domain, frame), settings, out, method, seed, hooks
        )
    trainer.remove_callback(PrinterCallback)  # Progress logs each step once, with ETA
    log.info(
        "training %s (%s) on %d rows%s",
        base.name,
        method,
        len(frame),
        f", resuming from {resume.name}" if resume else "",
    )
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = previous + progress.elapsed()
    # A callback that stopped training on purpose (the budget) says why; the checkpoint is kept
    # and no finished model is written, so the next run resumes instead of reusing a cut-short one.
    stopped = next((cb.stopped for cb in hooks if getattr(cb, "stopped", None)), None)
    if stopped is not None:
        raise stopped

    model_dir, adapter_dir = save_outputs(trainer.model, tokenizer, out)
    history = trainer.state.log_history
    write_json_atomic(out / "train_log.json", {"log_history": history})
    losses = [h["loss"] for h in history if "loss" in h]
    outcome = TrainResult(
        out_dir=str(out),
        model_dir=str(model_dir),
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        method=method,
        steps=result.global_step,
        wall_time_s=round(wall, 2),
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        resumed_from_step=progress.start_step,
        reused=False,
    )
    rewards = [h["reward"] for h in history if "reward" in h]
    meta = {
        "key": key,
        "result": outcome.to_dict(),
        "base_model": str(base),
        "data": str(data_path),
        "data_sha256": key["data_sha256"],
        "rows": len(frame),
        "method": method,
        "hyperparameters": key["hyperparameters"],
        "seed": seed,
        "steps": outcome.steps,
        "wall_time_s": outcome.wall_time_s,
        "loss_first": outcome.loss_first,
        "loss_last": outcome.loss_last,
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "bf16": trainer.args.bf16,  # the precision it trained in (resolved once, in _device_args)
        "code_version": code_version(),
    }
    write_json_atomic(out / "meta.json", meta)  # last: its presence marks the run finished
    log.info(
        "trained %s: %d steps in %.0fs, loss %s -> %s",
        method,
        outcome.steps,
        wall,
        "-" if outcome.loss_first is None else f"{outcome.loss_first:.4f}",
        "-" if outcome.loss_last is None else f"{outcome.loss_last:.4f}",
    )
    return outcome


# --- the stage, as the flow runs it ----------------------------------------------------------------


class TrainJob(StageJob):
    stage: ClassVar[str] = "train"

    budget: Budget | None = None
    planned_usd: float = Field(
        0.0, description="Planned cost of the first checkpoint interval (job estimate)."
    )
    task: TaskSpec
    student: ResolvedModel
    synthesis_uri: str = Field(description="synthesis/<key>/ in the store; its train.parquet is the data.")
    train_sha256: str = Field(description="Content hash of that train.parquet.")
    training: TrainingSettings
    method: str = Field(description="lora, full or grpo, as the pre-screen resolved training.method.")
    seed: int = 0


class TrainedStudent(BaseModel):
    """The trained student in the store (models/<key>/{model,adapter,meta.json}) and how training went."""

    model_uri: str
    model_sha256: str
    adapter_uri: str | None
    meta_uri: str
    result: TrainResult
    where: Ran  # which machine and process ran it


class TrainingSpend(TrainerCallback):
    """Training charged to the run's ledger per checkpoint interval; it stops at a checkpoint when the
    next interval, priced at the seconds per step measured so far, would overspend (stratos.ledger)."""

    def __init__(self, budget: Budget, key: str, first_interval_usd: float) -> None:
        self.budget, self.key, self.ledger = budget, key, budget.ledger()
        self.first_interval_usd = first_interval_usd
        self.mark_step, self.mark_time = 0, time.perf_counter()
        self.stopped: BudgetExhausted | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark_step, self.mark_time = state.global_step, time.perf_counter()
        self.ledger.check("training", self.first_interval_usd)

    def _charge(self, step: int) -> float:
        """Charge the steps since the last mark; returns seconds per step."""
        seconds, steps = time.perf_counter() - self.mark_time, step - self.mark_step
        if steps > 0:
            self.ledger.charge(
                Entry(
                    id=f"training:{self.key}:steps-{self.mark_step}-{step}",
                    stage="training",
                    item=f"steps {self.mark_step}-{step}",
                    usd=self.budget.gpu_usd(seconds),
                    basis=self.budget.gpu_basis,
                    note=self.budget.gpu_note(),
                    seconds=seconds,
                )
            )
        self.mark_step, self.mark_time = step, time.perf_counter()
        return seconds / max(steps, 1)

    def on_save(self, args, state, control, **kwargs):
        per_step = self._charge(state.global_step)
        steps = min(args.save_steps, state.max_steps - state.global_step)
        if steps <= 0:
            return
        try:
            self.ledger.check("training", self.budget.gpu_usd(per_step * steps))
        except BudgetExhausted as err:
            self.stopped, control.should_training_stop = err, True

    def on_train_end(self, args, state, control, **kwargs):
        if self.stopped is None:
            self._charge(state.global_step)


def run_training(job: TrainJob) -> TrainedStudent:
    """Fine-tune the student on the synthesized set; resumes from checkpoints; publishes models/<key>/."""
    # Held while training: a concurrent identical run waits, then reuses the finished model, and
    # never resumes from a checkpoint this process is still writing.
    with locked_work_dir(job.stage, job.key) as out:
        data = fetch(job.synthesis_uri) / "train.parquet"
        result = train_student(
            job.student.model,
            data,
            get_domain(job.task),
            job.training,
            out,
            method=job.method,
            seed=job.seed,
            callbacks=[TrainingSpend(job.budget, job.key, job.planned_usd)] if job.budget else [],
        )
        store = from_uri(job.store_uri)
        model = store.put_dir(f"models/{job.key}/model", result.model_dir)
        adapter = (
            store.put_dir(f"models/{job.key}/adapter", result.adapter_dir) if result.adapter_dir else None
        )
        meta = store.put_file(f"models/{job.key}/meta.json", out / "meta.json")
        return TrainedStudent(
            model_uri=model.uri,
            model_sha256=content_digest(result.model_dir),
            adapter_uri=adapter.uri if adapter else None,
            meta_uri=meta.uri,
            result=result,
            where=Ran.here(),
        )


@task(
    name="train",
    task_run_name="train",
    cache_policy=dispatched(run_training),
    persist_result=True,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
)
def train(job: TrainJob, runner: Runner) -> TrainedStudent:
    """Train the student where the runner places it; a retry resumes from the last checkpoint."""
    return runner.run(run_training, job)
