"""Every benchmark in bench/ still runs: each script at a smoke size in a subprocess, its last line JSON.

Benchmarks call the same stage functions as the flow, so a changed signature breaks them; this
file makes that a failing test instead of a surprise at the next measurement. The quick ones run
in the default suite; those that train teachers, start a Prefect server or train SmolLM2 are
`slow` (`bash scripts/test.sh -m slow`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# script -> its smoke arguments. Each figure these print is meaningless; only that they print.
QUICK = {
    "catalog_coverage.py": [],  # the test excerpts of 11 clouds by default
    "pfg.py": ["--smoke"],
    "generation.py": ["--smoke"],
    "training.py": ["--sizes", "nano", "--rows", "16", "--grpo-steps", "2"],
    "serving.py": ["--size", "nano", "--concurrency", "1", "2", "--requests", "4", "--max-tokens", "4"],
}
SLOW = {
    "orchestration.py": ["--train-size", "48", "--epochs", "1", "--test-size", "24", "--repeats", "1"],
    "strategy_threshold.py": ["--train", "8", "--probe", "8"],  # trains the weak teacher unless zoo has it
    "quality.py": ["--smoke", "--scenario", "arithmetic"],  # trains the strong teacher unless the zoo has it
    "real_models.py": ["--smoke"],  # SmolLM2: LoRA steps, evaluation, a served endpoint (~3-5 min)
}


def test_every_benchmark_is_covered():
    assert sorted(QUICK | SLOW) == sorted(p.name for p in BENCH.glob("*.py"))


def run_bench(script: str, args: list[str], tmp_path: Path, timeout: int) -> dict:
    """Run one benchmark in its own process (this session's zoo, a private STRATOS_HOME) and parse its JSON."""
    env = {**os.environ, "STRATOS_HOME": str(tmp_path / "home")}
    out = [] if script in ("catalog_coverage.py", "pfg.py") else _out_flag(script, tmp_path)
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, *out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing on stdout"
    return json.loads(lines[-1])


def _out_flag(script: str, tmp_path: Path) -> list[str]:
    """Benchmarks with a work directory write it under the test's temporary folder."""
    return ["--out", str(tmp_path / "out")] if script in ("quality.py", "real_models.py") else []


@pytest.mark.parametrize("script", sorted(QUICK))
def test_quick_benchmark_runs_and_ends_with_json(script, tmp_path):
    report = run_bench(script, QUICK[script], tmp_path, timeout=300)
    assert isinstance(report, dict) and report


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SLOW))
def test_slow_benchmark_runs_and_ends_with_json(script, tmp_path):
    report = run_bench(script, SLOW[script], tmp_path, timeout=3600)
    assert isinstance(report, dict) and report
