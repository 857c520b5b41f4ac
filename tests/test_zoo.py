"""The local model zoo: tokenizer, random models, content-addressed cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from stratos import zoo


def test_tokenizer_round_trips_text_and_tiles(tiny_tokenizer_dir: Path):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for text in ["What is 12 + 34?\n12 + 34 = 46\n#### 46", "🀇🀈🀉 🀙🀙 wait: é", "  two  spaces\tand tab"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    assert len(tok) <= 512


def test_chat_template_is_chatml_and_prompt_is_prefix(tiny_tokenizer_dir: Path):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 1 + 2?"}]
    rendered = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    full = tok.apply_chat_template(
        prompt + [{"role": "assistant", "content": "1 + 2 = 3\n#### 3"}], tokenize=False
    )
    # Completion-only loss finds the answer where prompt and prompt+answer token ids diverge.
    ids_prompt = tok(rendered, add_special_tokens=False)["input_ids"]
    ids_full = tok(full, add_special_tokens=False)["input_ids"]
    assert ids_full[: len(ids_prompt)] == ids_prompt
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids_full[len(ids_prompt) :]


def test_model_reloads_with_identical_logits(tiny_model_dir: Path, tmp_path: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, Qwen2ForCausalLM)
    ids = torch.tensor([[5, 17, 99, 200, 3]])
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_build_model_is_deterministic_per_seed(tiny_tokenizer_dir: Path, tmp_path: Path):
    dirs = [
        zoo.build_model("nano", tiny_tokenizer_dir, tmp_path / name, seed)
        for name, seed in [("a", 1), ("b", 1), ("c", 2)]
    ]
    weights = [AutoModelForCausalLM.from_pretrained(d).model.embed_tokens.weight for d in dirs]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])
    assert (dirs[0] / "tokenizer.json").is_file()  # saved together with its tokenizer


def test_random_model_is_cached_not_rebuilt(tiny_domain, tiny_model_dir: Path):
    builds = dict(zoo.BUILDS)
    mtime = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    again = zoo.random_model(tiny_domain, "nano", seed=0)
    assert again == tiny_model_dir
    assert dict(zoo.BUILDS) == builds
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime
    other = zoo.random_model(tiny_domain, "nano", seed=1)  # a different recipe is a different entry
    assert other != tiny_model_dir and zoo.BUILDS["model"] == builds.get("model", 0) + 1
    meta = json.loads((other / "meta.json").read_text())
    assert meta["recipe"]["seed"] == 1 and meta["size"] == "nano"


def test_failed_build_leaves_nothing_behind(zoo_dir: Path):
    def broken(tmp: Path) -> dict:
        (tmp / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    before = set(zoo_dir.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        zoo.cached_build("model-broken", {"x": 1}, broken)
    assert set(zoo_dir.iterdir()) == before


@pytest.mark.parametrize(
    ("size", "low", "high"),
    [("nano", 0.4e6, 0.8e6), ("micro", 1.5e6, 3e6), ("mini", 6e6, 10e6), ("small", 20e6, 28e6)],
)
def test_sizes_span_half_a_million_to_25_million(
    tiny_tokenizer_dir: Path, size: str, low: float, high: float
):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = Qwen2ForCausalLM(zoo.model_config(size, tok))
    assert low <= sum(p.numel() for p in model.parameters()) <= high


def test_bad_size_and_missing_tokenizer_are_clear(tiny_tokenizer_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown model size 'huge'.*nano"):
        zoo.build_model("huge", tiny_tokenizer_dir, tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no tokenizer at .*build_tokenizer"):
        zoo.build_model("nano", tmp_path / "nowhere", tmp_path / "m")


def test_zoo_dir_comes_from_the_environment(zoo_dir: Path, tiny_model_dir: Path):
    assert zoo.zoo_dir() == zoo_dir
    assert tiny_model_dir.parent == zoo_dir
