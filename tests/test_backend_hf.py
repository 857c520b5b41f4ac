"""The local Hugging Face backend on a random-init zoo model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend


@pytest.fixture(scope="module")
def backend(tiny_trained_model_dir: Path) -> HFBackend:
    return HFBackend(tiny_trained_model_dir, batch_size=4, price_per_hour=3.6)


def _prompts(n: int) -> list[list[dict[str, str]]]:
    # Growing questions, so a batch holds prompts of different lengths and needs padding.
    return [[{"role": "user", "content": f"What is {k} + {k * 7}?" + " Think." * k}] for k in range(n)]


def test_batched_equals_one_by_one(tiny_trained_model_dir: Path, backend: HFBackend):
    params = SamplingParams(max_new_tokens=12)
    alone = HFBackend(tiny_trained_model_dir, batch_size=1).generate(_prompts(6), params)
    batched = backend.generate(_prompts(6), params)
    assert [c[0].text for c in batched] == [c[0].text for c in alone]
    assert len({c[0].text for c in batched}) > 1  # the prompts really lead to different outputs


def test_prompts_are_left_padded(backend: HFBackend):
    texts = [
        backend.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in _prompts(3)
    ]
    enc = backend.tokenizer(texts, padding=True, add_special_tokens=False)
    assert enc["input_ids"][0][0] == backend.tokenizer.pad_token_id
    assert enc["attention_mask"][0][0] == 0 and all(row[-1] == 1 for row in enc["attention_mask"])


def test_n_samples_vary_and_repeat_with_a_seed(backend: HFBackend):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=7)
    first = backend.generate(_prompts(2), params)
    assert [len(c) for c in first] == [3, 3]
    assert len({c.text for c in first[0]}) > 1
    again = backend.generate(_prompts(2), params)
    assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in first]


def test_greedy_n_gives_identical_copies(backend: HFBackend):
    out = backend.generate(_prompts(1), SamplingParams(n=3, max_new_tokens=8))
    assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 1


def test_stop_string_truncates_and_stops_early(backend: HFBackend):
    full = backend.generate(_prompts(1), SamplingParams(max_new_tokens=24))[0][0]
    assert len(full.text) > 6
    stop = full.text[3:5]
    cut = backend.generate(_prompts(1), SamplingParams(max_new_tokens=24, stop=[stop]))[0][0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


def test_end_token_ends_a_row(tiny_model_dir: Path, backend: HFBackend):
    first = backend.generate(_prompts(1), SamplingParams(max_new_tokens=8))[0][0]
    # Make the token greedy decoding emits third the model's end token: the row must end there.
    ids = backend.tokenizer(first.text, add_special_tokens=False)["input_ids"]
    net = copy.deepcopy(backend.model)
    net.generation_config.eos_token_id = ids[2]
    ended = HFBackend.from_loaded(net, copy.deepcopy(backend.tokenizer)).generate(
        _prompts(1), SamplingParams(max_new_tokens=8)
    )[0][0]
    assert ended.finish_reason == "stop" and ended.completion_tokens <= 3


def test_usage_accounting(tiny_model_dir: Path):
    backend = HFBackend(tiny_model_dir, batch_size=2, price_per_hour=3600.0)
    out = backend.generate(_prompts(3), SamplingParams(max_new_tokens=5))
    completions = [c for cs in out for c in cs]
    usage = backend.usage
    assert usage.requests == 3
    assert usage.completion_tokens == sum(c.completion_tokens for c in completions) == 15
    expected_prompt = [
        len(backend.tokenizer.apply_chat_template(p, add_generation_prompt=True)["input_ids"])
        for p in _prompts(3)
    ]
    assert [c.prompt_tokens for c in completions] == expected_prompt
    assert usage.prompt_tokens == sum(expected_prompt)
    assert usage.seconds > 0 and usage.cost_usd == pytest.approx(usage.seconds)  # $3600/h = $1/s
    assert usage.tokens_per_second == pytest.approx(15 / usage.seconds)
    assert all(c.latency_s > 0 for c in completions)


def test_missing_model_path_names_the_path(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=f"'{missing}' does not exist.*save_pretrained"):
        HFBackend(missing)


def test_generation_leaves_no_grad_state(backend: HFBackend):
    backend.generate(_prompts(1), SamplingParams(max_new_tokens=2))
    assert not torch.is_grad_enabled() or all(p.grad is None for p in backend.model.parameters())
