"""Benchmark: local Hugging Face batched generation throughput on zoo models.

For each model size, generated tokens per second at batch 1, 8, 32 and 128,
and the speed-up of one batch of 64 over the same 64 prompts one at a time,
measured in the same run. Models are random-init zoo models (throughput does
not depend on what the weights learnt); decoding is greedy with a fixed
number of new tokens, and a row that emits its end token early simply
contributes fewer tokens, which the count reflects.

    .venv/bin/python bench/generation.py [--sizes nano small] [--new-tokens 32] [--threads 1] [--smoke]

`--smoke` (tests/test_bench.py): nano only, batches 1 and 8, one round, 4 new tokens, and the
batched/sequential ratio on 8 prompts.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from stratos import zoo
from stratos.backends.base import SamplingParams
from stratos.backends.hf import HFBackend

BATCHES = (1, 8, 32, 128)
SMOKE_BATCHES = (1, 8)


def _prompts(n: int) -> list[list[dict[str, str]]]:
    # Questions of the arithmetic domain's shape with varied lengths, so batches need padding.
    return [
        [
            {"role": "system", "content": "Compute step by step. End with '#### <number>'."},
            {"role": "user", "content": f"{317 * k % 9973}+{53 * k % 997}"},
        ]
        for k in range(n)
    ]


def _tokens_per_second(backend: HFBackend, n_prompts: int, new_tokens: int) -> float:
    backend.usage.__init__()  # fresh counters for this measurement
    backend.generate(_prompts(n_prompts), SamplingParams(max_new_tokens=new_tokens))
    return backend.usage.tokens_per_second


def bench_size(
    size: str,
    tokenizer_dir: Path,
    work: Path,
    new_tokens: int,
    rounds: int,
    batches: tuple[int, ...] = BATCHES,
    big: int = 64,
) -> dict:
    """Throughput of one model size at each batch size, plus the batched(`big`)/sequential ratio.

    A shared CPU's speed drifts from second to second, so each figure is the best of
    `rounds` repeats, and the ratio is taken per round (sequential and batched measured
    back to back) and summarised by its median.
    """
    model_dir = zoo.build_model(size, tokenizer_dir, work / size)
    backend = HFBackend(model_dir, batch_size=1)
    params = sum(p.numel() for p in backend.model.parameters())
    _tokens_per_second(backend, 2, 8)  # warm-up: first calls pay for lazy initialisation
    result: dict = {"parameters": params, "tokens_per_second": {}}
    for batch in batches:
        backend.batch_size = batch
        # One full batch (8 prompts at batch 1, so a single short call does not dominate).
        tps = max(_tokens_per_second(backend, max(batch, 8), new_tokens) for _ in range(rounds))
        result["tokens_per_second"][str(batch)] = round(tps, 1)
        print(f"{size}: batch {batch:>3}: {tps:8.0f} tokens/s", file=sys.stderr)
    ratios, sequential, batched = [], [], []
    for _ in range(rounds):
        backend.batch_size = 1
        sequential.append(_tokens_per_second(backend, min(16, big), new_tokens))  # one at a time
        backend.batch_size = big
        batched.append(_tokens_per_second(backend, big, new_tokens))  # `big` prompts in one batch
        ratios.append(batched[-1] / sequential[-1])
    ratio = statistics.median(ratios)
    result["sequential_tokens_per_second"] = round(max(sequential), 1)
    result["batched_64_tokens_per_second"] = round(max(batched), 1)
    result["batched64_over_sequential"] = round(ratio, 2)
    result["ratio_per_round"] = [round(r, 2) for r in ratios]
    print(
        f"{size}: batched({big})/sequential = {ratio:.1f}x (rounds: {result['ratio_per_round']})",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["nano", "small"], choices=sorted(zoo.SIZES))
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    parser.add_argument("--rounds", type=int, default=3, help="repeats per figure (best / median is kept)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: stratos/threads.py's rule)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the code path only")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.rounds, args.new_tokens = ["nano"], 1, 4
    batches, big = (SMOKE_BATCHES, 8) if args.smoke else (BATCHES, 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="stratos-bench-") as tmp:
        work = Path(tmp)
        texts = [f"{a}+{b}\n{a + b}\n#### {a + b}" for a in range(0, 999, 7) for b in range(0, 999, 101)]
        tokenizer_dir = zoo.build_tokenizer(texts, work / "tokenizer")
        started = time.perf_counter()
        sizes = {
            size: bench_size(size, tokenizer_dir, work, args.new_tokens, args.rounds, batches, big)
            for size in args.sizes
        }
    report = {
        "benchmark": "hf_generation",
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "smoke": args.smoke,
        "batched_ratio_batch": big,  # the batched64_* figures are at this batch size
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "sizes": sizes,
        "smallest_batched64_over_sequential": min(sizes.values(), key=lambda s: s["parameters"])[
            "batched64_over_sequential"
        ],
        "target_ratio": 10.0,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
