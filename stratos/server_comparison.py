"""PFG against its baselines over many specs: the comparison the paper makes, on the shipped catalogs.

Each scenario is a user (region) with a model-size need (GPU memory) and an
hourly cap; every method picks a server, and each pick is scored with the one
multi-objective score (stratos.scoring: closeness to the ideal point over
normalised hardware, cost and latency among that scenario's feasible servers).
The cost axis is the settings' `cost_objective`: $/h, or the estimated cost of
the job `job` describes (stratos.job_profile) on each server.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from stratos.job_cost import JobProfile
from stratos.pfg import select_server, selection_scores
from stratos.spec import Constraints, ServerSettings

REGIONS = ("us-east", "us-west", "eu-west", "eu-north", "asia-east", "australia")
GPU_MEMORY_GB = (24, 80, 160, 320)  # from a 7B LoRA job up to a 70B-class teacher
HOURLY_CAPS = (None, 5.0, 20.0)


def comparison_scenarios() -> list[Constraints]:
    """6 regions x 4 memory needs x 3 hourly caps = 72 user specs."""
    return [
        Constraints(region=r, min_gpu_memory_gb=m, max_hourly_usd=c, budget_usd=500, max_latency_ms=150)
        for r, m, c in itertools.product(REGIONS, GPU_MEMORY_GB, HOURLY_CAPS)
    ]


def compare_methods(
    servers: pd.DataFrame, settings: ServerSettings | None = None, job: JobProfile | None = None
) -> dict:
    """Mean score per method over the feasible scenarios, and PFG's wins/ties/losses against each."""
    settings = settings or ServerSettings(planned_hours=4, cost_objective="hourly")
    scores: dict[str, list[float]] = {}
    infeasible = 0
    for constraints in comparison_scenarios():
        selection = select_server(servers, constraints, settings, method="pfg", job=job)
        if not selection.feasible:
            infeasible += 1
            continue
        for name, value in selection_scores(selection, settings.weights).items():
            scores.setdefault(name, []).append(value)
    pfg = np.array(scores["pfg"])
    record = {}
    for name, values in scores.items():
        v = np.array(values)
        record[name] = {
            "mean_score": round(float(v.mean()), 4),
            "pfg_wins": int((pfg > v + 1e-9).sum()),
            "ties": int((np.abs(pfg - v) <= 1e-9).sum()),
            "pfg_losses": int((pfg < v - 1e-9).sum()),
        }
    return {"scenarios": len(pfg), "infeasible_scenarios": infeasible, "methods": record}
