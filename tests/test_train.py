"""Student training on tiny models: real optimizer steps, real checkpoints, a real kill and resume.

The task is one-digit addition from the arithmetic domain ("3+5" -> "3+5+0=8\\n#### 8"),
trained into the random-init nano model of the test zoo. One full fine-tune is
shared by several tests (it is also the uninterrupted reference for the resume
test and the trained base that LoRA and GRPO start from).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from stratos import zoo
from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend
from stratos.checkpoints import last_complete_checkpoint
from stratos.domains import get_domain
from stratos.domains.base import completion_text
from stratos.evaluation import evaluate
from stratos.rewards import domain_rewards, ends_with_answer_line
from stratos.spec import TaskSpec, TrainingSettings
from tasks.train import train_student

REPO = Path(__file__).resolve().parents[1]
# ~12 optimizer steps per run; logging_steps works out to 1, so every step's loss is logged.
FULL = TrainingSettings(
    method="full",
    learning_rate=5e-3,
    num_train_epochs=1,
    per_device_train_batch_size=16,
    save_steps=4,
    max_seq_length=64,
)


class Snapshot(TrainerCallback):
    """Copies of the trainable parameters when training begins and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.frozen_after = {
            n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
        }


@pytest.fixture(scope="module")
def arith():
    return get_domain(TaskSpec(domain="arithmetic", options={"digits": 1}))


@pytest.fixture(scope="module")
def train_parquet(tmp_path_factory, arith) -> Path:
    """Reference traces in the synthesis output format, each question twice (as n accepted samples)."""
    rows = [
        {
            "question_id": ex.id,
            "question": ex.question,
            "gold": ex.answer,
            "completion": completion_text(ex.rationale, ex.answer),
            "teacher": "reference",
            "mode": "alignment",
            "sample_index": k,
            "verdict": "accepted",
        }
        for ex in arith.load("train", 100, seed=0)
        for k in range(2)
    ]
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def nano(arith) -> Path:
    return zoo.random_model(arith, "nano", seed=0)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, nano, train_parquet, arith):
    snap = Snapshot()
    result = train_student(
        nano, train_parquet, arith, FULL, tmp_path_factory.mktemp("full") / "out", callbacks=[snap]
    )
    return result, snap


def _log(out_dir: str) -> list[dict]:
    return json.loads((Path(out_dir) / "train_log.json").read_text())["log_history"]


def test_full_finetune_lowers_loss_and_changes_every_weight(full_run, nano):
    result, snap = full_run
    assert result.method == "full" and result.adapter_dir is None
    assert result.loss_last < 0.5 * result.loss_first
    assert snap.before and not snap.frozen
    unchanged = [n for n in snap.before if torch.equal(snap.before[n], snap.after[n])]
    assert unchanged == []
    # The saved model is the trained one, not the base.
    saved = AutoModelForCausalLM.from_pretrained(result.model_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(nano).state_dict()
    assert all(not torch.equal(saved[n], base[n]) for n in base)
    meta = json.loads((Path(result.out_dir) / "meta.json").read_text())
    assert meta["steps"] == result.steps and meta["method"] == "full" and len(meta["data_sha256"]) == 64
    assert meta["code_version"]["stratos"] and meta["hyperparameters"]["learning_rate"] == 5e-3


def test_cpu_bf16_autocast_is_opt_in_and_trains(tmp_path, nano, train_parquet, arith):
    seen = {}

    class Args(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(bf16=args.bf16, use_cpu=args.use_cpu)

    settings = FULL.model_copy(update={"bf16": True, "save_steps": 100})
    result = train_student(nano, train_parquet, arith, settings, tmp_path / "out", callbacks=[Args()])
    assert seen == {"bf16": True, "use_cpu": True}
    assert result.loss_last < 0.5 * result.loss_first
    meta = json.loads((Path(result.out_dir) / "meta.json").read_text())
    assert meta["hyperparameters"]["bf16"] is True and meta["bf16"] is True  # asked for, and trained in
    # The saved weights stay float32 (autocast computes in bf16, the master weights do not change type).
    saved = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert {p.dtype for p in saved.parameters()} == {torch.float32}


def test_loss_is_logged_about_50_times_at_a_divisor_of_save_steps():
    from tasks.train import log_interval

    assert log_interval(200, 864) == 10  # not gcd(200, 17) == 1: a line per step would flood the terminal
    assert log_interval(4, 12) == 1
    assert log_interval(7, 1000) == 7
    assert all(200 % log_interval(200, n) == 0 for n in range(1, 20000, 97))


def test_finished_run_is_reused(full_run, nano, train_parquet, arith):
    result, _ = full_run
    started = time.perf_counter()
    again = train_student(nano, train_parquet, arith, FULL, result.out_dir)
    assert again.reused and again.steps == result.steps and time.perf_counter() - started < 5
    with pytest.raises(ValueError, match="other inputs"):
        train_student(
            nano, train_parquet, arith, FULL.model_copy(update={"learning_rate": 1e-3}), result.out_dir
        )


def test_bad_inputs_fail_before_loading(tmp_path, train_parquet, arith, nano):
    with pytest.raises(FileNotFoundError, match="base_model '.*missing' has no config.json"):
        train_student(tmp_path / "missing", train_parquet, arith, FULL, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="train_parquet"):
        train_student(nano, tmp_path / "none.parquet", arith, FULL, tmp_path / "out")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, full_run, train_parquet, arith):
    # LoRA on a random base learns almost nothing; on the trained base it refines the solver.
    settings = TrainingSettings(
        method="lora",
        learning_rate=1e-2,
        num_train_epochs=1,
        per_device_train_batch_size=16,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        save_steps=100,
        max_seq_length=64,
    )
    snap = Snapshot()
    result = train_student(
        full_run[0].model_dir,
        train_parquet,
        arith,
        settings,
        tmp_path_factory.mktemp("lora") / "out",
        callbacks=[snap],
    )
    return result, snap


def test_lora_lowers_loss_and_changes_every_adapter_weight(lora_run):
    result, snap = lora_run
    assert result.method == "lora" and result.adapter_dir
    assert result.loss_last < result.loss_first
    assert snap.before and all("lora_" in n for n in snap.before)
    # Every attention and MLP projection of both layers carries an adapter (A and B).
    assert len(snap.before) == 2 * 7 * 2
    unchanged = [n for n in snap.before if torch.equal(snap.before[n], snap.after[n])]
    assert unchanged == []
    # The base stays frozen.
    assert all(torch.equal(snap.frozen[n], snap.frozen_after[n]) for n in snap.frozen)
    saved = load_file(Path(result.adapter_dir) / "adapter_model.safetensors")
    assert len(saved) == len(snap.after)


def test_merged_model_scores_like_adapter_on_base(lora_run, full_run, arith):
    from peft import PeftModel

    result, _ = lora_run
    sample = arith.load("test", 8, seed=0) + arith.load("train", 16, seed=1)
    params = SamplingParams(max_new_tokens=24)
    merged = evaluate(HFBackend(result.model_dir, name="merged"), arith, sample, params)
    base = AutoModelForCausalLM.from_pretrained(full_run[0].model_dir)
    adapted = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    tokenizer = HFBackend(result.model_dir).tokenizer
    on_base = evaluate(HFBackend.from_loaded(adapted, tokenizer, "adapter"), arith, sample, params)
    # Same greedy text token for token, hence the same predictions and the same score.
    assert [r.completion for r in merged.records] == [r.completion for r in on_base.records]
    assert [r.prediction for r in merged.records] == [r.prediction for r in on_base.records]
    assert merged.accuracy == on_base.accuracy
    # The adapter matters: without it the base writes different text, so equality above is not vacuous.
    plain = evaluate(HFBackend(full_run[0].model_dir, name="base"), arith, sample, params)
    assert [r.completion for r in plain.records] != [r.completion for r in merged.records]


RUNNER = textwrap.dedent(
    """
    import sys, time
    from transformers import TrainerCallback
    from stratos.domains import get_domain
    from stratos.spec import TaskSpec, TrainingSettings
    from tasks.train import train_student

    class Slow(TrainerCallback):  # slow enough for the test to kill it between checkpoints
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.4)

    base, data, out, settings = sys.argv[1:5]
    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": 1}))
    train_student(base, data, domain, TrainingSettings.model_validate_json(settings), out, callbacks=[Slow()])
    """
)


def test_resume_after_kill_continues_step_and_data_position(tmp_path, nano, train_parquet, arith, full_run):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(nano), str(train_parquet), str(out), FULL.model_dump_json()],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while last_complete_checkpoint(out / "checkpoints") is None and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "meta.json").exists()
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    killed_at = int(checkpoint.name.rsplit("-", 1)[1])
    reference = full_run[0]
    assert 0 < killed_at < reference.steps

    resumed = train_student(nano, train_parquet, arith, FULL, out)
    assert resumed.resumed_from_step == killed_at  # the step counter continued from the checkpoint
    assert resumed.steps == reference.steps  # and finished at the same total
    # Data position: every step after the checkpoint saw the batch the uninterrupted run saw
    # there, so the per-step losses agree (a restart from the epoch's first batch would not).
    ref = {h["step"]: h["loss"] for h in _log(reference.out_dir) if "loss" in h}
    got = {h["step"]: h["loss"] for h in _log(resumed.out_dir) if "loss" in h}
    after = [s for s in ref if s > killed_at]
    assert after and set(after) <= set(got)
    np.testing.assert_allclose([got[s] for s in after], [ref[s] for s in after], rtol=1e-4)


GRPO = TrainingSettings(
    method="grpo",
    learning_rate=3e-3,
    num_train_epochs=1,
    per_device_train_batch_size=16,
    num_generations=8,
    beta=0.0,
    save_steps=100,
    max_seq_length=64,
)


def test_reward_functions_follow_the_domain(arith):
    correctness, fmt = domain_rewards(arith)
    completions = [[{"role": "assistant", "content": "3+5+0=8\n#### 8"}], "3+5+0=9\n#### 9", "8"]
    assert correctness(completions, gold=["8", "8", "8"]) == [1.0, 0.0, 0.0]
    assert fmt(completions) == [1.0, 1.0, 0.0]
    assert not ends_with_answer_line("#### 8\nmore text")


def _rewards(out_dir: str, key: str = "reward") -> list[float]:
    return [h[key] for h in _log(out_dir) if key in h]


def test_grpo_smoke(tmp_path, full_run, train_parquet, arith):
    """A few GRPO steps end to end: generation, domain rewards, update, saved model and meta."""
    settings = GRPO.model_copy(update={"num_train_epochs": 0.07, "learning_rate": 1e-3})
    result = train_student(full_run[0].model_dir, train_parquet, arith, settings, tmp_path / "out")
    assert result.method == "grpo" and result.steps >= 3 and result.adapter_dir is None
    assert len(_rewards(result.out_dir)) == result.steps
    assert len(_rewards(result.out_dir, "rewards/correctness/mean")) == result.steps
    # (Whether weights move depends on the groups: a group whose completions all score alike
    # has zero advantage and no gradient. The slow test below shows learning.)
    assert all(0.0 <= r <= 1.0 for r in _rewards(result.out_dir, "rewards/correctness/mean"))
    assert (Path(result.model_dir) / "config.json").is_file()
    assert json.loads((Path(result.out_dir) / "meta.json").read_text())["reward_last"] is not None


@pytest.mark.slow
def test_grpo_improves_mean_domain_reward(tmp_path, nano, train_parquet, arith):
    """SFT briefly (format mostly learnt, a few sums right), then GRPO on the domain reward for 2 epochs.

    Measured on 2 shared CPU cores (67 s quiet, ~11 min under heavy load): mean reward over the first
    third of the 86 steps 0.170, last third 0.201 -- format 0.683 -> 0.951, correctness 0.033 -> 0.011.
    The gain is the format term; correctness does not improve at this scale (a 0.5M-parameter model
    learns the answer-line format in a few dozen steps but one-digit sums only slowly).
    """
    frame = pd.read_parquet(train_parquet)
    more = tmp_path / "train8.parquet"
    pd.concat([frame] * 4).to_parquet(more)  # 8 copies per question: a longer SFT warm start
    sft = train_student(nano, more, arith, FULL.model_copy(update={"save_steps": 100}), tmp_path / "sft")
    settings = GRPO.model_copy(update={"num_train_epochs": 2, "learning_rate": 1e-3})
    result = train_student(sft.model_dir, train_parquet, arith, settings, tmp_path / "grpo")
    rewards = _rewards(result.out_dir)
    third = len(rewards) // 3
    first, last = float(np.mean(rewards[:third])), float(np.mean(rewards[-third:]))
    parts = {k: _rewards(result.out_dir, f"rewards/{k}/mean") for k in ("correctness", "format")}
    detail = ", ".join(f"{k} {np.mean(v[:third]):.3f} -> {np.mean(v[-third:]):.3f}" for k, v in parts.items())
    print(
        f"GRPO mean reward: first third {first:.3f}, last third {last:.3f} over {len(rewards)} steps ({detail})"
    )
    assert last > first + 0.02


def test_grpo_batch_must_hold_whole_groups(tmp_path, nano, train_parquet, arith):
    bad = GRPO.model_copy(update={"per_device_train_batch_size": 12})
    with pytest.raises(
        ValueError, match=r"per_device_train_batch_size \(12\) must be a multiple .* set it to 8"
    ):
        train_student(nano, train_parquet, arith, bad, tmp_path / "out")


def test_a_model_without_a_chat_template_trains_and_answers_in_the_plain_format(
    tmp_path, nano, train_parquet, arith
):
    """A base model (no chat template) gets one documented format in training, evaluation and serving."""
    import shutil

    from stratos.backends.hf import PLAIN_CHAT_TEMPLATE

    base = tmp_path / "base"
    shutil.copytree(nano, base)
    (base / "chat_template.jinja").unlink()
    assert HFBackend(base).tokenizer.chat_template == PLAIN_CHAT_TEMPLATE  # loading gives it the plain format
    settings = FULL.model_copy(update={"per_device_train_batch_size": 64, "save_steps": 100})
    result = train_student(base, train_parquet, arith, settings, tmp_path / "out")
    served = HFBackend(result.model_dir)  # what evaluation and the CPU server load
    assert served.tokenizer.chat_template == PLAIN_CHAT_TEMPLATE  # saved with the trained model
    prompt = served.tokenizer.apply_chat_template(
        arith.messages("3+5"), add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("Question: 3+5\nAnswer:\n") and "<|im_start|>" not in prompt
    out = served.generate([arith.messages("3+5")], SamplingParams(max_new_tokens=16))
    assert out[0][0].text  # it generates in that format
