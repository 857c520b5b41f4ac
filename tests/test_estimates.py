"""Memory and latency estimates against values computed by hand from the published Qwen2.5 configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stratos.estimates import (
    GIB,
    count_params,
    decode_latency_ms,
    footprint,
    kv_bytes_per_token,
    load_config,
    lora_param_count,
    matmul_params,
    training_flops_per_token,
)

DATA = Path(__file__).parent / "data"


def config_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(DATA / f"{name}.config.json", d / "config.json")
    return d


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_config(config_dir(tmp_path_factory.mktemp("c"), "qwen2.5-0.5b"))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return load_config(config_dir(tmp_path_factory.mktemp("c"), "qwen2.5-7b"))


def per_layer(h: int, i: int, kv_dim: int) -> int:
    # q (with bias) + k, v (with bias) + o (no bias) + gate/up/down + two RMSNorms
    return (h * h + h) + 2 * (h * kv_dim + kv_dim) + h * h + 3 * h * i + 2 * h


def test_parameter_counts_match_hand_computation(small, large):
    # 0.5B: 24 layers, h 896, MLP 4864, 2 KV heads x 64; tied embeddings counted once.
    assert count_params(small) == 24 * per_layer(896, 4864, 128) + 151936 * 896 + 896 == 494_032_768
    # 7B: 28 layers, h 3584, MLP 18944, 4 KV heads x 128; separate lm_head.
    assert count_params(large) == 28 * per_layer(3584, 18944, 512) + 2 * 152064 * 3584 + 3584 == 7_615_616_512


def test_kv_cache_and_weights(small, large):
    assert kv_bytes_per_token(small) == 2 * 24 * 2 * 64 * 2 == 12_288
    assert kv_bytes_per_token(large) == 2 * 28 * 4 * 128 * 2 == 57_344
    fp = footprint(large, context_tokens=4096, batch=1)
    assert fp.weights_gib == pytest.approx(7_615_616_512 * 2 / GIB)  # 14.19 GiB
    assert fp.kv_cache_gib == pytest.approx(57_344 * 4096 / GIB)  # 0.22 GiB
    assert fp.serve_gib == pytest.approx(fp.weights_gib + fp.kv_cache_gib)


def test_training_memory(small):
    fp = footprint(small, train_seq_len=512, train_batch=8, lora_r=16)
    acts = 24 * (34 * 512 * 8 * 896 + 5 * 14 * 512 * 512 * 8) + 512 * 8 * 151936 * 6
    assert fp.train_full_gib == pytest.approx((494_032_768 * 16 + acts) / GIB)
    # LoRA r=16 on q,k,v,o,gate,up,down: r x (in + out) per layer.
    lora = 24 * 16 * ((896 + 896) + 2 * (896 + 128) + (896 + 896) + 2 * (896 + 4864) + (4864 + 896))
    assert fp.lora_params == lora
    assert fp.train_lora_gib == pytest.approx((494_032_768 * 2 + lora * 16 + acts) / GIB)
    assert fp.train_lora_gib < fp.train_full_gib


def test_decode_latency_roofline(large):
    # H100 SXM: 3350 GB/s, 989 TFLOPS. 256 prompt tokens, 256 new.
    ms = decode_latency_ms(large, bandwidth_gbs=3350, tflops=989, prompt_tokens=256, new_tokens=256)
    weights = 7_615_616_512 * 2
    prefill = 2 * 7_615_616_512 * 256 / (989e12 * 0.4)
    decode = 256 * (weights + 57_344 * (256 + 128)) / (3350e9 * 0.8)
    assert ms == pytest.approx((prefill + decode) * 1000)
    assert 1400 < ms < 1500  # ~5.7 ms per token
    two = decode_latency_ms(large, bandwidth_gbs=3350, tflops=2 * 989, gpu_count=2)
    assert two == pytest.approx(ms / 2)


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read a model config from .*give a local model directory"):
        load_config(tmp_path / "nothing-here")


def test_matmul_parameters_and_training_flops(small, large):
    # A tied embedding is also the LM head (a matmul); an untied input embedding is only a lookup.
    assert matmul_params(small) == count_params(small) == 494_032_768
    assert matmul_params(large) == 7_615_616_512 - 152_064 * 3_584
    lora = lora_param_count(small, 16)
    assert lora == footprint(small, lora_r=16).lora_params
    assert training_flops_per_token(1e9, 1e7, "full") == 6e9
    assert training_flops_per_token(1e9, 1e7, "lora") == 4e9 + 6e7  # no weight gradients for the frozen base
    with pytest.raises(ValueError, match="training method 'grpo' has no FLOPs formula"):
        training_flops_per_token(1e9, 0, "grpo")
