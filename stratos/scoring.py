"""The multi-objective score, defined once and used by every comparison Stratos reports.

Each objective is first min-max normalised over the candidates being compared
and oriented so that 1 is best (more hardware, lower cost, lower latency,
higher accuracy, shorter training). A candidate's score is its closeness to the
ideal point (1, ..., 1):

    score = 1 - sqrt( sum_j w_j (1 - x_j)^2 / sum_j w_j )

so 1 means best on every objective at once and 0 means worst on every one.
Unlike a weighted sum, a distance to the ideal point rewards balance: a server
that is cheapest but weakest is not rescued by one perfect axis. This is the
score the server-selection benchmark and the run report use.

For comparing trained candidates (student vs teacher, or whole strategies as
the paper does) `candidate_scores` applies the same score to four objectives,
`CANDIDATE_OBJECTIVES`: accuracy (higher is better), latency, training time and
cost (lower is better). Each is min-max normalised across the candidates being
compared, so a score is relative to that set: with two candidates every axis is
0 or 1, and an axis on which all candidates tie counts as best for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Objective name -> larger is better. Units are the caller's, consistently across candidates
# (run report: accuracy 0-1, p95 latency s, training hours, USD of training + projected serving).
CANDIDATE_OBJECTIVES: dict[str, bool] = {
    "accuracy": True,
    "latency_s": False,
    "training_hours": False,
    "cost_usd": False,
}


def minmax(values: np.ndarray, larger_is_better: bool) -> np.ndarray:
    """Scale to [0, 1] with 1 the best value; a constant column is all 1 (nothing to prefer)."""
    values = np.asarray(values, dtype=float)
    lo, hi = np.min(values), np.max(values)
    if hi <= lo:
        return np.ones_like(values)
    scaled = (values - lo) / (hi - lo)
    return scaled if larger_is_better else 1.0 - scaled


def closeness_to_ideal(normalised: np.ndarray, weights: np.ndarray | list[float] | None = None) -> np.ndarray:
    """Score rows of an (n, d) array of normalised objectives (1 = best); returns (n,) in [0, 1]."""
    x = np.atleast_2d(np.asarray(normalised, dtype=float))
    w = np.ones(x.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    gap = ((1.0 - x) ** 2 * w).sum(axis=1) / w.sum()
    return 1.0 - np.sqrt(gap)


def candidate_scores(
    candidates: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Closeness to ideal of each candidate over CANDIDATE_OBJECTIVES, normalised across `candidates`.

    `candidates` maps a name to its raw objectives, e.g. {"student": {"accuracy": 0.8,
    "latency_s": 0.05, "training_hours": 0.2, "cost_usd": 3.1}, "teacher": {...}}; `weights`
    (default equal) maps objective names to non-negative weights.
    """
    if not candidates:
        raise ValueError("candidate_scores() got no candidates; pass at least one name -> objectives mapping")
    names = list(candidates)
    columns = []
    for objective, larger_is_better in CANDIDATE_OBJECTIVES.items():
        for name in names:
            if objective not in candidates[name]:
                raise ValueError(
                    f"candidate '{name}' lacks objective '{objective}'; give all of {list(CANDIDATE_OBJECTIVES)}"
                )
        columns.append(
            minmax(np.array([candidates[n][objective] for n in names], dtype=float), larger_is_better)
        )
    weights = weights or {}
    unknown = sorted(set(weights) - set(CANDIDATE_OBJECTIVES))
    if unknown:
        raise ValueError(f"weight '{unknown[0]}' names no objective; use {list(CANDIDATE_OBJECTIVES)}")
    w = [float(weights.get(o, 1.0)) for o in CANDIDATE_OBJECTIVES]
    if min(w) < 0 or sum(w) <= 0:
        raise ValueError(
            f"weights {dict(zip(CANDIDATE_OBJECTIVES, w, strict=True))} must be non-negative and not all zero"
        )
    scores = closeness_to_ideal(np.column_stack(columns), w)
    return {name: float(score) for name, score in zip(names, scores, strict=True)}
