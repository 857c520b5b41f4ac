"""Benchmark: a deployed endpoint under concurrent load, through the official `openai` client.

Deploys a zoo model with the deploy stage (tasks.serve: start -> health -> smoke ->
parity), then, for each concurrency level, sends a bounded number of chat
completions from a thread pool (loopback only; a level stops submitting after
--max-seconds) and reports per-request latency p50/p95, requests/s, completion
tokens/s and errors (which must be 0). The server is stopped however the run ends.

The model is the trained arithmetic teacher when the zoo ($STRATOS_ZOO_DIR) holds one,
else a random-init zoo model of --size; decoding is greedy with --max-tokens new tokens.

    .venv/bin/python bench/serving.py [--backend cpu|vllm] [--concurrency 1 8 32] [--requests 96]

Progress and the table go to stderr/stdout; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai

from stratos import zoo
from stratos.backends.hf import HFBackend
from stratos.domains import get_domain
from stratos.evaluation import evaluate
from stratos.spec import ServeSettings, TaskSpec
from tasks.serve import VllmOptions, parity_sample, serve_student, stop_endpoint

NAME = "bench-student"


def _pick_model(size: str) -> tuple[Path, str]:
    """The zoo's trained arithmetic teacher if present (it writes real answers), else a random model."""
    trained = sorted(zoo.zoo_dir().glob("teacher-arithmetic-strong-*/meta.json"))
    if trained:
        return trained[-1].parent, "teacher-arithmetic-strong"
    return zoo.random_model(get_domain(TaskSpec(domain="arithmetic")), size), f"random-{size}"


def _one(client: openai.OpenAI, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, int, str]:
    """(latency s, completion tokens, error) of one request; errors are counted, not raised."""
    began = time.perf_counter()
    try:
        reply = client.chat.completions.create(
            model=NAME, messages=messages, max_tokens=max_tokens, temperature=0.0
        )
    except openai.OpenAIError as exc:
        return time.perf_counter() - began, 0, f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - began, reply.usage.completion_tokens if reply.usage else 0, ""


def run_level(url: str, prompts: list, concurrency: int, max_tokens: int, max_seconds: float) -> dict:
    """Send the prompts `concurrency` at a time; stop submitting once `max_seconds` have passed."""
    client = openai.OpenAI(base_url=url, api_key="unused", timeout=120.0, max_retries=0)
    started = time.perf_counter()

    def task(messages):
        if time.perf_counter() - started > max_seconds:
            return None  # over the time bound: not sent
        return _one(client, messages, max_tokens)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = [r for r in pool.map(task, prompts) if r is not None]
    wall = time.perf_counter() - started
    client.close()
    latencies = np.array([r[0] for r in results])
    errors = [r[2] for r in results if r[2]]
    tokens = sum(r[1] for r in results)
    return {
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
        "requests_per_s": round(len(results) / wall, 2),
        "completion_tokens_per_s": round(tokens / wall, 1),
        "mean_completion_tokens": round(statistics.mean(r[1] for r in results), 1),
        "seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["cpu", "vllm"], default="cpu")
    parser.add_argument("--vllm-executable", default=None, help="for --backend vllm (else $STRATOS_VLLM)")
    parser.add_argument("--size", default="micro", choices=sorted(zoo.SIZES), help="random model size")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per request (greedy)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per level")
    args = parser.parse_args()

    domain = get_domain(TaskSpec(domain="arithmetic"))
    model_dir, model_label = _pick_model(args.size)
    questions = domain.load("test", args.requests, seed=1)
    prompts = [domain.messages(q.question) for q in questions]
    # Parity needs the evaluation's accuracy on the same sample: measure it here, in-process.
    sample = questions[:16]
    expected = evaluate(HFBackend(model_dir, name=NAME), domain, sample)
    sample, expected_accuracy = parity_sample(expected, sample, len(sample))
    print(f"serving {model_label} ({model_dir}) on the {args.backend} path", file=sys.stderr)
    began = time.perf_counter()
    record = serve_student(
        model_dir,
        domain=domain,
        parity_examples=sample,
        expected_accuracy=expected_accuracy,
        served_model_name=NAME,
        server_id="local",
        settings=ServeSettings(backend=args.backend, startup_timeout_s=600, parity_tolerance=0.1),
        vllm=VllmOptions(
            executable=args.vllm_executable, max_model_len=1024 if args.backend == "vllm" else None
        ),
        reuse=False,
    )
    serve_s = time.perf_counter() - began
    levels = {}
    try:
        for concurrency in args.concurrency:
            levels[str(concurrency)] = run_level(
                record.url, prompts, concurrency, args.max_tokens, args.max_seconds
            )
            print(f"concurrency {concurrency}: {levels[str(concurrency)]}", file=sys.stderr)
    finally:
        stop_endpoint(record.id)

    print(
        f"\n{model_label} on {args.backend}: healthy after {record.startup_s:.1f}s, served in {serve_s:.1f}s"
    )
    print("| concurrency | requests | errors | p50 ms | p95 ms | req/s | completion tok/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c, r in levels.items():
        print(
            f"| {c} | {r['requests']} | {r['errors']} | {r['latency_p50_ms']} | {r['latency_p95_ms']} | "
            f"{r['requests_per_s']} | {r['completion_tokens_per_s']} |"
        )
    report = {
        "benchmark": "serving",
        "backend": args.backend,
        "model": model_label,
        "machine": platform.machine(),
        "max_tokens": args.max_tokens,
        "startup_s": record.startup_s,
        "serve_s": round(serve_s, 1),
        "parity": record.parity.model_dump() if record.parity else None,
        "levels": levels,
        "errors": sum(r["errors"] for r in levels.values()),
    }
    print(json.dumps(report))
    if report["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
