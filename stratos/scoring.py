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
"""

from __future__ import annotations

import numpy as np


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
