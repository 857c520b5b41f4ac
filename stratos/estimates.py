"""What a model needs, from its config alone: parameters, memory to serve and to train, decode latency.

No weights are loaded. Parameters are counted exactly by building the model on
PyTorch's meta device (shapes only, no storage), which works for any
architecture transformers knows. Everything else is arithmetic on the config:

    weights      = params x bytes(dtype)
    KV cache     = 2 (K and V) x layers x kv_heads x head_dim x bytes x tokens x batch
    full FT      = params x 16 B (bf16 weights + bf16 grads + fp32 master + 2 fp32 Adam moments)
                   + activations
    LoRA         = params x bytes(dtype) (frozen) + lora_params x 16 B + activations
    activations  = per layer 34·s·b·h + 5·a·s²·b bytes (16-bit, no recomputation; Korthikanti
                   et al. 2022) + logits s·b·V·6 bytes (bf16 logits + fp32 for the loss)

Decode latency is a roofline: each new token reads every weight and the KV
cache once, so per-token time = bytes moved / (memory bandwidth x efficiency);
prefill is compute-bound, 2·params·prompt_tokens / (peak FLOPS x MFU). Batched
generation (synthesis, evaluation) reads the weights once per step for the whole
batch, so a step costs max(weights + batch x KV read, 2·params·batch FLOPs).

Training compute, per token, counts the matmuls a token passes through
(`matmul_params`: all parameters but an untied input embedding, which is a
lookup): full fine-tuning 6·N (forward 2N, backward 2N for activation gradients
and 2N for weight gradients); LoRA 4·N + 6·N_lora, because the frozen base still
needs its forward and its activation gradients (to reach earlier adapters) but no
weight gradients, and the adapters are trained in full. Attention's own
s²-terms are left out: under 3% of the FLOPs at the sequence lengths used here.

Memory figures are GiB (2^30 bytes), the unit the catalogs' GPU memory is in.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}
# Achieved fractions of peak: decode reaches ~80% of memory bandwidth in good
# serving engines; prefill ~40% of peak tensor FLOPS.
BANDWIDTH_EFFICIENCY = 0.8
PREFILL_MFU = 0.4
# Under training.method "auto", models trained from random init are fully fine-tuned (LoRA on a
# random base learns almost nothing), and so is any model this small: no pretrained LLM worth
# adapting is under 50M parameters, and full fine-tuning of one that size fits anywhere.
# Pretrained models above it (the smallest real one here, SmolLM2, has 135M) get LoRA.
FULL_FINETUNE_MAX_PARAMS = 50_000_000
# Linear layers LoRA adapts by default (attention and MLP projections of Qwen2/Llama).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Footprint:
    """Sizes of one model for one workload (GiB unless named otherwise)."""

    params: int
    lora_params: int
    weights_gib: float
    kv_cache_gib: float
    serve_gib: float
    train_full_gib: float
    train_lora_gib: float
    kv_bytes_per_token: int

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(model: str | Path):
    """The transformers config of a local path or hub id (offline: local paths only)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(model))
    except OSError as exc:
        raise ValueError(
            f"cannot read a model config from '{model}': no config.json there and the hub is offline; "
            "give a local model directory (or set HF_HUB_OFFLINE=0 with network for hub ids)"
        ) from exc


def _config_key(config) -> str:
    return config.to_json_string(use_diff=False)


@cache
def _count_params(config_json: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Exact parameter count and the (in, out) shape of every LoRA-targetable linear layer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    # Tied input/output embeddings are one tensor; parameters() already counts it once.
    total = sum(p.numel() for p in model.parameters())
    linears = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS
    }
    return total, linears


def count_params(config) -> int:
    return _count_params(_config_key(config))[0]


def matmul_params(config) -> int:
    """Parameters a token's forward pass multiplies by: all but an untied input embedding (a lookup)."""
    params = count_params(config)
    if getattr(config, "tie_word_embeddings", False):
        return params  # the one embedding tensor is also the LM head, a matmul
    return params - config.vocab_size * config.hidden_size


def lora_param_count(config, lora_r: int) -> int:
    """Adapter parameters of LoRA rank `lora_r` on the default target layers: r x (in + out) each."""
    _, linears = _count_params(_config_key(config))
    return sum(lora_r * (fan_in + fan_out) for fan_in, fan_out in linears.values())


def training_flops_per_token(matmul: float, lora: float, method: str) -> float:
    """Forward + backward FLOPs per trained token: 6N for full fine-tuning, 4N + 6 N_lora for LoRA."""
    if method == "full":
        return 6.0 * matmul
    if method == "lora":
        return 4.0 * matmul + 6.0 * lora
    raise ValueError(f"training method '{method}' has no FLOPs formula; use 'full' or 'lora'")


def generation_seconds(
    params: float,
    matmul: float,
    kv_token_bytes: float,
    tflops: ArrayLike,
    bandwidth_gbs: ArrayLike,
    sequences: float,
    prompt_tokens: float,
    new_tokens: float,
    batch: int,
) -> np.ndarray:
    """Roofline seconds to generate `sequences` completions on one GPU, `batch` at a time, bf16 weights.

    Per batch: prefill 2·matmul·prompt·batch FLOPs, then `new_tokens` steps, each the slower of
    reading the weights plus the batch's KV cache (mean context prompt + new/2) and
    2·matmul·batch FLOPs. `tflops` and `bandwidth_gbs` are one GPU's (arrays work: one per server).
    """
    if sequences <= 0:
        return np.zeros_like(np.asarray(tflops, dtype=float))
    batch = max(1, min(batch, math.ceil(sequences)))
    flops_per_s = np.asarray(tflops, dtype=float) * 1e12 * PREFILL_MFU
    bytes_per_s = np.asarray(bandwidth_gbs, dtype=float) * 1e9 * BANDWIDTH_EFFICIENCY
    prefill = 2 * matmul * prompt_tokens * batch / flops_per_s
    step_bytes = params * DTYPE_BYTES["bfloat16"] + batch * kv_token_bytes * (prompt_tokens + new_tokens / 2)
    step = np.maximum(step_bytes / bytes_per_s, 2 * matmul * batch / flops_per_s)
    return math.ceil(sequences / batch) * (prefill + new_tokens * step)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_bytes_per_token(config, dtype: str = "bfloat16") -> int:
    """Bytes of K and V cached per token of context, all layers."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return int(2 * config.num_hidden_layers * kv_heads * _head_dim(config) * DTYPE_BYTES[dtype])


def activation_bytes(config, seq_len: int, batch: int) -> float:
    """Training activations kept for backward, 16-bit, no recomputation."""
    s, b, h, a = seq_len, batch, config.hidden_size, config.num_attention_heads
    per_layer = 34 * s * b * h + 5 * a * s * s * b
    logits = s * b * config.vocab_size * 6
    return per_layer * config.num_hidden_layers + logits


def footprint(
    config,
    dtype: str = "bfloat16",
    context_tokens: int = 2048,
    batch: int = 8,
    train_seq_len: int = 512,
    train_batch: int = 8,
    lora_r: int = 16,
) -> Footprint:
    """Serving and training memory of a model described by `config`."""
    params = count_params(config)
    lora_params = lora_param_count(config, lora_r)
    weights = params * DTYPE_BYTES[dtype]
    kv_token = kv_bytes_per_token(config, dtype)
    kv = kv_token * context_tokens * batch
    acts = activation_bytes(config, train_seq_len, train_batch)
    return Footprint(
        params=params,
        lora_params=lora_params,
        weights_gib=weights / GIB,
        kv_cache_gib=kv / GIB,
        serve_gib=(weights + kv) / GIB,
        train_full_gib=(params * 16 + acts) / GIB,
        train_lora_gib=(weights + lora_params * 16 + acts) / GIB,
        kv_bytes_per_token=kv_token,
    )


def decode_latency_ms(
    config,
    bandwidth_gbs: float,
    tflops: float,
    gpu_count: int = 1,
    prompt_tokens: int = 256,
    new_tokens: int = 256,
    dtype: str = "bfloat16",
) -> float:
    """Roofline estimate of one request's model time (prefill + decode), in ms, on a server.

    `bandwidth_gbs` is per GPU (GB/s, 1e9); `tflops` is the server total; weights are assumed
    sharded across `gpu_count` GPUs (tensor parallel), so bandwidth adds up.
    """
    params = count_params(config)
    weights = params * DTYPE_BYTES[dtype]
    kv_token = kv_bytes_per_token(config, dtype)
    bandwidth = bandwidth_gbs * 1e9 * gpu_count * BANDWIDTH_EFFICIENCY
    prefill_s = 2 * params * prompt_tokens / (tflops * 1e12 * PREFILL_MFU)
    # The KV cache read grows by one token per step: average context over the decode.
    mean_context = prompt_tokens + new_tokens / 2
    decode_s = new_tokens * (weights + kv_token * mean_context) / bandwidth
    return (prefill_s + decode_s) * 1000


def training_method(params: int, method: str, from_scratch: bool = False) -> str:
    """What training.method `auto` resolves to: full fine-tuning for a model trained from random init
    (the zoo's `model-`/`teacher-`/`base-` models say so in meta.json) or of at most
    FULL_FINETUNE_MAX_PARAMS parameters, LoRA for a pretrained model above that; other methods as given."""
    if method != "auto":
        return method
    return "full" if from_scratch or params <= FULL_FINETUNE_MAX_PARAMS else "lora"
