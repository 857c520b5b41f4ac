"""Benchmark: Pareto Front Grid server selection at catalog scale, and PFG vs its baselines.

    .venv/bin/python bench/pfg.py [--sizes 1000,10000,100000,1000000] [--repeats 3] [--smoke]

1. The shipped catalogs (~2.5k GPU servers) are resampled with replacement to
   each size, prices jittered ±10% (log-normal) so rows stay distinct; the time
   of a full PFG selection (objectives, filters, normalisation, front, grid,
   choice; no baselines) is the best of `--repeats` runs, once with the hourly
   cost objective and once with `job` (each server's estimated cost of the job
   examples/gsm8k-gpu.yaml describes, budget-filtered by that estimate).
2. At 10^4 rows, the non-dominated set is computed twice in the same run: the
   naive pairwise check (each server against all others) and the vectorised one;
   their time ratio is `naive_speedup_at_1e4`. The two masks must agree.
3. The comparison of stratos/server_comparison.py: mean multi-objective score of
   each method's pick over 72 user specs, under each cost objective (scores are
   comparable within an objective: the cost axis differs).

Targets on a 2-core CPU: <= 1 s at 10^6 rows; >= 50x faster than naive at 10^4.
`--smoke` (tests/test_bench.py): 10^3 rows, one repeat, the naive check at 10^3 (it is O(n^2)).
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

from stratos.catalog import load_catalogs  # noqa: E402
from stratos.job_profile import job_profile  # noqa: E402
from stratos.pfg import non_dominated, normalise, select_server, server_objectives  # noqa: E402
from stratos.server_comparison import compare_methods  # noqa: E402
from stratos.spec import Constraints, ServerSettings, load_spec  # noqa: E402

JOB_SPEC = Path(__file__).resolve().parents[1] / "examples/gsm8k-gpu.yaml"
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
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the code path only")
    args = parser.parse_args()
    naive_rows = 1_000 if args.smoke else 10_000
    if args.smoke:
        args.sizes, args.repeats = "1000", 1

    settings = ServerSettings(planned_hours=4, cost_objective="hourly")
    job_settings = ServerSettings(
        cost_objective="job"
    )  # no planned_hours: the budget filter uses the estimate
    job = job_profile(load_spec(JOB_SPEC))
    servers, _ = load_catalogs(settings.catalog_paths())
    seconds: dict[str, dict[str, float]] = {"hourly": {}, "job": {}}
    front_sizes: dict[str, dict[str, int]] = {"hourly": {}, "job": {}}
    for rows in (int(s) for s in args.sizes.split(",")):
        table = resample(servers, rows)
        for objective, cfg in (("hourly", settings), ("job", job_settings)):

            def run(t=table, cfg=cfg):
                return select_server(t, CONSTRAINTS, cfg, "pfg", with_baselines=False, job=job)

            front_sizes[objective][str(rows)] = len(run().front)
            seconds[objective][str(rows)] = round(best_of(args.repeats, run), 4)
            print(
                f"PFG ({objective:>6}) at {rows:>8} rows: {seconds[objective][str(rows)]:.4f} s "
                f"(front {front_sizes[objective][str(rows)]})",
                file=sys.stderr,
            )

    table = resample(servers, naive_rows, seed=1)
    obj = server_objectives(table, CONSTRAINTS, settings)
    x = normalise(obj, np.ones(len(obj), dtype=bool))
    naive_s = best_of(1, lambda: naive_non_dominated(x))
    fast_s = best_of(args.repeats, lambda: non_dominated(x))
    assert (naive_non_dominated(x) == non_dominated(x)).all(), "masks disagree"
    speedup = naive_s / fast_s
    print(
        f"non-dominated at {naive_rows} rows: naive {naive_s:.3f} s, vectorised {fast_s:.5f} s, {speedup:.0f}x",
        file=sys.stderr,
    )

    comparisons = {
        "hourly": compare_methods(servers, settings),
        "job": compare_methods(servers, job_settings, job=job),
    }
    for objective, comparison in comparisons.items():
        print(f"cost objective {objective}:", file=sys.stderr)
        for name, rec in comparison["methods"].items():
            print(
                f"  {name:<15} mean score {rec['mean_score']:.3f}  (PFG wins/ties/losses {rec['pfg_wins']}/{rec['ties']}/{rec['pfg_losses']})",
                file=sys.stderr,
            )
    result = {
        "benchmark": "pfg",
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
        "seconds_by_rows": seconds["hourly"],
        "front_size_by_rows": front_sizes["hourly"],
        "seconds_by_rows_job": seconds["job"],
        "front_size_by_rows_job": front_sizes["job"],
        "smoke": args.smoke,
        "naive_rows": naive_rows,  # the *_at_1e4 figures are at this many rows
        "naive_seconds_at_1e4": round(naive_s, 4),
        "vectorised_seconds_at_1e4": round(fast_s, 6),
        "naive_speedup_at_1e4": round(speedup, 1),
        "targets": {"max_seconds_at_1e6": 1.0, "min_naive_speedup_at_1e4": 50},
        "score": {name: rec["mean_score"] for name, rec in comparisons["hourly"]["methods"].items()},
        "comparison": comparisons["hourly"],
        "score_job": {name: rec["mean_score"] for name, rec in comparisons["job"]["methods"].items()},
        "comparison_job": comparisons["job"],
        "job_spec": str(JOB_SPEC.relative_to(JOB_SPEC.parents[1])),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
