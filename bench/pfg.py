"""Benchmark: Pareto Front Grid server selection at catalog scale, and PFG vs its baselines.

    .venv/bin/python bench/pfg.py [--sizes 1000,10000,100000,1000000] [--repeats 3]

1. The shipped catalogs (~2.5k GPU servers) are resampled with replacement to
   each size, prices jittered ±10% (log-normal) so rows stay distinct; the time
   of a full PFG selection (objectives, filters, normalisation, front, grid,
   choice; no baselines) is the best of `--repeats` runs.
2. At 10^4 rows, the non-dominated set is computed twice in the same run: the
   naive pairwise check (each server against all others) and the vectorised one;
   their time ratio is `naive_speedup_at_1e4`. The two masks must agree.
3. The comparison of tasks/server_comparison.py: mean multi-objective score of
   each method's pick over 72 user specs.

Targets on a 2-core CPU: <= 1 s at 10^6 rows; >= 50x faster than naive at 10^4.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratos.spec import Constraints, ServerSettings  # noqa: E402
from tasks.catalog import load_catalogs  # noqa: E402
from tasks.select_server import non_dominated, normalise, select_server, server_objectives  # noqa: E402
from tasks.server_comparison import compare_methods  # noqa: E402

CONSTRAINTS = Constraints(
    region="us-east", min_gpu_memory_gb=48, max_hourly_usd=40, budget_usd=1000, max_latency_ms=150
)


def resample(servers: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = servers.iloc[rng.integers(len(servers), size=rows)].reset_index(drop=True)
    out["price"] = out["price"] * rng.lognormal(0.0, 0.1, size=rows)
    out["id"] = out["id"] + "#" + pd.Series(np.arange(rows)).astype(str)
    return out


def naive_non_dominated(x: np.ndarray) -> np.ndarray:
    """Textbook O(n^2): each point against every other point."""
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        keep[i] = not ((x >= x[i]).all(axis=1) & (x > x[i]).any(axis=1)).any()
    return keep


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = ServerSettings(planned_hours=4)
    servers, _ = load_catalogs(settings.catalog_paths())
    seconds: dict[str, float] = {}
    front_sizes: dict[str, int] = {}
    for rows in (int(s) for s in args.sizes.split(",")):
        table = resample(servers, rows)
        selection = select_server(table, CONSTRAINTS, settings, method="pfg", with_baselines=False)
        front_sizes[str(rows)] = len(selection.front)
        seconds[str(rows)] = round(
            best_of(
                args.repeats,
                lambda t=table: select_server(t, CONSTRAINTS, settings, "pfg", with_baselines=False),
            ),
            4,
        )
        print(
            f"PFG at {rows:>8} rows: {seconds[str(rows)]:.4f} s (front {front_sizes[str(rows)]})",
            file=sys.stderr,
        )

    table = resample(servers, 10_000, seed=1)
    obj = server_objectives(table, CONSTRAINTS, settings)
    x = normalise(obj, np.ones(len(obj), dtype=bool))
    naive_s = best_of(1, lambda: naive_non_dominated(x))
    fast_s = best_of(args.repeats, lambda: non_dominated(x))
    assert (naive_non_dominated(x) == non_dominated(x)).all(), "masks disagree"
    speedup = naive_s / fast_s
    print(
        f"non-dominated at 10^4: naive {naive_s:.3f} s, vectorised {fast_s:.5f} s, {speedup:.0f}x",
        file=sys.stderr,
    )

    comparison = compare_methods(servers, settings)
    for name, rec in comparison["methods"].items():
        print(
            f"  {name:<15} mean score {rec['mean_score']:.3f}  (PFG wins/ties/losses {rec['pfg_wins']}/{rec['ties']}/{rec['pfg_losses']})",
            file=sys.stderr,
        )
    result = {
        "benchmark": "pfg",
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
        "seconds_by_rows": seconds,
        "front_size_by_rows": front_sizes,
        "naive_seconds_at_1e4": round(naive_s, 4),
        "vectorised_seconds_at_1e4": round(fast_s, 6),
        "naive_speedup_at_1e4": round(speedup, 1),
        "targets": {"max_seconds_at_1e6": 1.0, "min_naive_speedup_at_1e4": 50},
        "score": {name: rec["mean_score"] for name, rec in comparison["methods"].items()},
        "comparison": comparison,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
