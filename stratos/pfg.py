"""Stage 1: choose the server with the Pareto Front Grid (PFG), and the baselines it is compared with.

Each server is a triple (H hardware, C cost, L network latency to the user). C is
the server's $/hour (`servers.cost_objective: hourly`) or the estimated cost of the
whole job on it (`job`, stratos/job_estimate.py): a faster, pricier GPU that
finishes sooner can then be the cheaper choice.
Hard filters remove servers that cannot run the job; the rest are min-max
normalised per objective (1 = best) and placed on a K x K x K grid around the
ideal point z* = (1, 1, 1):

    r   = (1 + 2σ) / K
    g_j = ceil((z*_j - x_j + σ) / r)          in 1..K  (1 = the cell nearest the ideal)

The front is the set of non-dominated servers; the Pareto cells are the grid
cells holding front servers that no other such cell grid-dominates. PFG takes
the Pareto cell with the lowest cost index (ties: smallest index sum, then
hardware and latency index), and in it the server nearest z* (under `job`: the
cheapest job in it, ties nearest z*, so no server of the chosen cell has a
cheaper job than the choice).

The budget filter is $/h x servers.planned_hours when that is set, else each
server's estimated (planned) job cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stratos.catalog import assumed_latency_ms, round_trip_ms
from stratos.job_cost import JobProfile, serving_only
from stratos.job_estimate import assumptions, estimate_jobs, job_estimate_record, planned_job_usd
from stratos.scoring import closeness_to_ideal, minmax
from stratos.spec import SELECTION_METHODS, Constraints, ServerSettings

OBJECTIVES = ("hardware", "cost", "latency")
BLOCK = 256  # points per block in the skyline sweep: small, so the in-block pairwise check stays cheap
PRUNE_BINS = 32  # cells per axis of the pruning grid inside non_dominated (not the PFG grid)


@dataclass
class Selection:
    """The outcome of server selection; arrays index rows of `servers`."""

    method: str
    servers: pd.DataFrame  # id, hardware, cost_per_hour, latency_ms, feasible, normalised objectives
    chosen: str | None
    front: list[str]
    pareto_cells: list[tuple[int, int, int]]
    chosen_cell: tuple[int, int, int] | None
    baselines: dict[str, str | None]
    eliminated: dict[str, int]
    constraint_text: dict[str, str]
    nearest_feasible: list[dict] = field(default_factory=list)
    reason: str = ""
    cost_objective: str = "hourly"
    job_profile: JobProfile | None = None  # the job each server's `job_usd` estimates

    def job_estimates(self) -> pd.DataFrame:
        """Every server's job estimate by stage and case (stratos.job_estimate), rows aligned with `servers`."""
        return estimate_jobs(self._profile(), self.servers)

    def job_assumptions(self) -> dict:
        return assumptions(self._profile())

    def _profile(self) -> JobProfile:
        if self.job_profile is None:
            raise ValueError("this selection was made without a job profile; pass job= to select_server")
        return self.job_profile

    @property
    def feasible(self) -> bool:
        return self.chosen is not None

    def row(self, server_id: str) -> pd.Series:
        return self.servers.loc[self.servers["id"] == server_id].iloc[0]

    def front_ranked(self) -> list[str]:
        """The chosen server, then the rest of the front nearest the ideal point first (fail-over order)."""
        rows = self.servers[self.servers["id"].isin(self.front) & (self.servers["id"] != self.chosen)]
        cols = [c for c in ("norm_hardware", "norm_cost", "norm_latency") if c in rows]
        distance = ((1.0 - rows[cols]) ** 2).sum(axis=1) if cols else pd.Series(0.0, index=rows.index)
        rest = rows.assign(_d=distance).sort_values(["_d", "id"])["id"].tolist()
        return ([self.chosen] if self.chosen else []) + rest

    def to_json(self, job_estimates: bool = False) -> dict:
        """The `stratos plan --json` object; `job_estimates` adds each server's estimate and the assumptions."""
        cols = ["id", "hardware", "cost_per_hour", "job_usd", "latency_ms", "feasible"]
        servers = self.servers[cols].to_dict(orient="records")
        if job_estimates:
            estimates = self.job_estimates()
            for i, record in enumerate(servers):
                record["job_estimate"] = job_estimate_record(estimates, i)
        out = {
            "chosen": self.chosen,
            "method": self.method,
            "cost_objective": self.cost_objective,
            "pareto_front": self.front,
            "pareto_cells": [list(c) for c in self.pareto_cells],
            "chosen_cell": list(self.chosen_cell) if self.chosen_cell else None,
            "baselines": self.baselines,
            "eliminated": self.eliminated,
            "nearest_feasible": self.nearest_feasible,
            "reason": self.reason,
            "servers": servers,
        }
        if job_estimates:
            out["job_assumptions"] = self.job_assumptions()
        return out


# ---------------------------------------------------------------- objectives and filters


def server_objectives(
    servers: pd.DataFrame, constraints: Constraints, settings: ServerSettings
) -> pd.DataFrame:
    """Raw objectives per server (hardware larger better, cost $/h and latency ms smaller better) and its GPUs."""
    hardware = servers["tflops"] if settings.hardware_metric == "tflops" else servers["total_gpu_memory_gb"]
    cost = servers["spot_price"] if settings.use_spot else servers["price"]
    latency = servers["measured_latency_ms"].to_numpy(dtype=float, copy=True)
    modelled = np.isnan(latency)
    latency[modelled] = round_trip_ms(
        servers["lat"].to_numpy(dtype=float)[modelled],
        servers["lon"].to_numpy(dtype=float)[modelled],
        constraints.region,
    )
    # No LatencyMs and no known location: the worst case, so it never looks closer than a known server.
    assumed = np.isnan(latency)
    if assumed.any():
        latency[assumed] = assumed_latency_ms(latency[~assumed])
    return pd.DataFrame(
        {
            "id": servers["id"].array,
            "hardware": hardware.to_numpy(dtype=float),
            "cost_per_hour": cost.to_numpy(dtype=float),
            "cost": cost.to_numpy(
                dtype=float
            ),  # the cost axis: $/h here; select_server sets the job's under 'job'
            "latency_ms": latency,
            "location_assumed": assumed,
            "total_gpu_memory_gb": servers["total_gpu_memory_gb"].to_numpy(dtype=float),
            # What later stages need to size models for the chosen server (fit, roofline latency).
            "accelerator": servers["accelerator"].array,
            "gpu_count": servers["gpu_count"].to_numpy(dtype=float),
            "tflops": servers["tflops"].to_numpy(dtype=float),
            "bandwidth_gbs": servers["bandwidth_gbs"].to_numpy(dtype=float),
        }
    )


def constraint_masks(
    obj: pd.DataFrame, constraints: Constraints, settings: ServerSettings
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per hard constraint, the mask of servers it eliminates, and a sentence saying what it is.

    Without servers.planned_hours the budget is checked against `obj["job_usd"]`, the estimated job.
    """
    cost = obj["cost_per_hour"].to_numpy()
    masks: dict[str, np.ndarray] = {}
    text: dict[str, str] = {}
    if settings.use_spot:
        masks["spot"] = np.isnan(cost)
        text["spot"] = "no spot price (use_spot is on)"
    if constraints.min_gpu_memory_gb:
        masks["gpu_memory"] = obj["total_gpu_memory_gb"].to_numpy() < constraints.min_gpu_memory_gb
        text["gpu_memory"] = f"total GPU memory below {constraints.min_gpu_memory_gb:g} GB"
    if constraints.max_hourly_usd is not None:
        masks["hourly_cap"] = cost > constraints.max_hourly_usd
        text["hourly_cap"] = f"price above the hourly cap ${constraints.max_hourly_usd:g}/h"
    if settings.planned_hours is not None:
        masks["budget"] = cost * settings.planned_hours > constraints.budget_usd
        text["budget"] = (
            f"{settings.planned_hours:g} planned hours would exceed the ${constraints.budget_usd:g} budget"
        )
    else:
        masks["budget"] = obj["job_usd"].to_numpy() > constraints.budget_usd
        text["budget"] = f"estimated job cost above the ${constraints.budget_usd:g} budget"
    masks["latency"] = obj["latency_ms"].to_numpy() > constraints.max_latency_ms
    text["latency"] = f"network round trip to {constraints.region} above {constraints.max_latency_ms:g} ms"
    return masks, text


def normalise(obj: pd.DataFrame, feasible: np.ndarray) -> np.ndarray:
    """(n, 3) objectives in [0, 1], 1 = best, min-max over the feasible servers (others NaN)."""
    x = np.full((len(obj), 3), np.nan)
    if feasible.any():
        x[feasible, 0] = minmax(obj["hardware"].to_numpy()[feasible], larger_is_better=True)
        x[feasible, 1] = minmax(obj["cost"].to_numpy()[feasible], larger_is_better=False)
        x[feasible, 2] = minmax(obj["latency_ms"].to_numpy()[feasible], larger_is_better=False)
    return x


# ---------------------------------------------------------------- Pareto front and grid


def grid_cells(x: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Cell index g_j = ceil((1 - x_j + σ) / r), r = (1 + 2σ)/K, in 1..K for x in [0, 1]."""
    r = (1 + 2 * sigma) / k
    # The epsilon keeps x = 1 - σ ± rounding from jumping a cell; the clip only guards rounding.
    g = np.ceil((1.0 - x + sigma) / r - 1e-12).astype(np.int64)
    return np.clip(g, 1, k)


def _dominated_by(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each row of `points`: does some row of `others` weakly beat it everywhere and strictly somewhere?"""
    if len(others) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    ge = (others[None, :, :] >= points[:, None, :]).all(axis=2)
    gt = (others[None, :, :] > points[:, None, :]).any(axis=2)
    return (ge & gt).any(axis=1)


def non_dominated(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of x (n, d), larger is better on every column.

    Three exact steps keep this near-linear on real catalogs:
    1. grid: a point whose cell is strictly behind an occupied cell on every axis is
       strictly beaten on every axis by each point of that cell, so it is dropped unseen;
    2. ties: among points equal on all axes but one (real catalogs have few distinct
       hardware and latency values), only the best on that axis can survive;
    3. sweep: sorted by coordinate sum (a dominator always has a larger sum), each small
       block is checked against the front found so far, then survivors against each other.
    """
    keep = np.zeros(len(x), dtype=bool)
    if len(x) == 0:
        return keep
    candidates = np.flatnonzero(~_strictly_behind_occupied(x, PRUNE_BINS))
    for axis in range(x.shape[1]):
        candidates = _best_among_ties(x, candidates, axis)
    order = candidates[np.argsort(-x[candidates].sum(axis=1), kind="stable")]
    front = np.empty((0, x.shape[1]))
    for start in range(0, len(order), BLOCK):
        block = order[start : start + BLOCK]
        block = block[~_dominated_by(x[block], front)]
        block = block[~_dominated_by(x[block], x[block])]
        keep[block] = True
        front = np.vstack([front, x[block]])
    return keep


def dense_ranks(x: np.ndarray) -> np.ndarray:
    """Each column of x (n, d) as its dense rank scaled to [0, 1]: the same order and ties, exactly."""
    out = np.zeros(x.shape)
    for j in range(x.shape[1]):
        _, rank = np.unique(x[:, j], return_inverse=True)
        out[:, j] = rank / max(int(rank.max()), 1) if len(rank) else rank
    return out


def _best_among_ties(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """Of the points `idx`, those best on `axis` within their group of equal other coordinates."""
    others = [j for j in range(x.shape[1]) if j != axis]
    # lexsort's last key is the primary one: group by the other axes, best on `axis` first.
    order = idx[np.lexsort((-x[idx, axis], *(x[idx, j] for j in reversed(others))))]
    xs = x[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (xs[1:][:, others] != xs[:-1][:, others]).any(axis=1)
    group_best = xs[starts, axis][np.cumsum(starts) - 1]
    return np.sort(order[xs[:, axis] == group_best])


def _strictly_behind_occupied(x: np.ndarray, bins: int) -> np.ndarray:
    """Per point: is there an occupied grid cell strictly ahead of its cell on every axis?"""
    d = x.shape[1]
    cells = grid_cells(x, bins, 0.0) - 1  # 0-based; bins cells per axis, 0 = best
    occupied = np.zeros((bins,) * d, dtype=bool)
    occupied[tuple(cells.T)] = True
    reach = occupied  # reach[c]: some occupied cell is <= c on every axis
    for axis in range(d):
        reach = np.logical_or.accumulate(reach, axis=axis)
    behind = np.zeros_like(reach)
    behind[(slice(1, None),) * d] = reach[(slice(None, -1),) * d]
    return behind[tuple(cells.T)]


def pareto_cells(cells: np.ndarray) -> np.ndarray:
    """Unique cells (m, 3) not grid-dominated by another cell (<= everywhere, < somewhere)."""
    unique = np.unique(cells, axis=0)
    dominated = np.array([((u >= unique).all(axis=1) & (u > unique).any(axis=1)).any() for u in unique])
    return unique[~dominated]


def _best(candidates: np.ndarray, ids: np.ndarray, *keys: np.ndarray) -> int:
    """Among `candidates`, filter by each key in turn (smallest wins), then the smallest id."""
    for key in keys:
        values = key[candidates]
        candidates = candidates[values == values.min()]
    return (
        int(candidates[np.argmin(ids[candidates].astype(str))]) if len(candidates) > 1 else int(candidates[0])
    )


def pfg_choice(
    x: np.ndarray,
    raw: np.ndarray,
    ids: np.ndarray,
    cost: np.ndarray,
    k: int,
    sigma: float,
    cheapest_in_cell: bool = False,
):
    """Index of the PFG choice among rows of x (all feasible), the front mask, Pareto cells, chosen cell.

    The front is found on `raw`, the same objectives before normalising (larger is better): min-max
    scaling can round two values one ulp apart to the same number, and the worse would then stay on
    the front. In the chosen cell: the server nearest the ideal point (ties: cheaper), or with
    `cheapest_in_cell` the cheapest (ties: nearest).
    """
    front = non_dominated(dense_ranks(raw))
    front_idx = np.flatnonzero(front)
    cells = grid_cells(x[front_idx], k, sigma)
    pcells = pareto_cells(cells)
    # Lowest cost index, then smallest index sum, then hardware and latency index.
    order = np.lexsort((pcells[:, 2], pcells[:, 0], pcells.sum(axis=1), pcells[:, 1]))
    cell = pcells[order[0]]
    in_cell = front_idx[(cells == cell).all(axis=1)]
    distance = np.linalg.norm(1.0 - x, axis=1)
    keys = (cost, distance) if cheapest_in_cell else (distance, cost)
    chosen = _best(in_cell, ids, *keys)
    return chosen, front, pcells, tuple(int(c) for c in cell)


# ---------------------------------------------------------------- baselines


def baseline_choice(
    method: str, x: np.ndarray, obj: pd.DataFrame, feasible_idx: np.ndarray, settings: ServerSettings
) -> int:
    """Index of the server a baseline method picks among the feasible ones."""
    ids = obj["id"].to_numpy()
    hw, cost, lat = (obj[c].to_numpy() for c in ("hardware", "cost", "latency_ms"))
    # SkyPilot's optimizer takes the cheapest feasible $/h (or price x estimated time, given a time estimator)
    if method == "cost_first":
        return _best(feasible_idx, ids, cost, -hw, lat)
    if method == "hardware_first":
        return _best(feasible_idx, ids, -hw, cost, lat)
    if method == "weighted_sum":
        score = -(x @ np.asarray(settings.weights))
        return _best(feasible_idx, ids, score, cost)
    if method == "random":
        ordered = feasible_idx[np.argsort(ids[feasible_idx].astype(str), kind="stable")]
        return int(ordered[np.random.default_rng(settings.seed).integers(len(ordered))])
    raise ValueError(
        f"unknown selection method '{method}'; use one of pfg, cost_first, hardware_first, random, weighted_sum"
    )


# ---------------------------------------------------------------- the stage


def _nearest_feasible(
    obj: pd.DataFrame,
    masks: dict[str, np.ndarray],
    constraints: Constraints,
    settings: ServerSettings,
    n: int = 5,
) -> list[dict]:
    """The servers that miss the constraints by the least (relative shortfall summed over constraints)."""
    cost = obj["cost_per_hour"].to_numpy()
    spend = obj["job_usd"].to_numpy() if settings.planned_hours is None else cost * settings.planned_hours
    shortfall = {
        "gpu_memory": (constraints.min_gpu_memory_gb or 0) - obj["total_gpu_memory_gb"].to_numpy(),
        "hourly_cap": cost - (constraints.max_hourly_usd or math.inf),
        "budget": spend - constraints.budget_usd,
        "latency": obj["latency_ms"].to_numpy() - constraints.max_latency_ms,
    }
    scale = {
        "gpu_memory": constraints.min_gpu_memory_gb or 1,
        "hourly_cap": constraints.max_hourly_usd or 1,
        "budget": constraints.budget_usd,
        "latency": constraints.max_latency_ms,
    }
    total = np.zeros(len(obj))
    for name in masks:
        if name == "spot":
            total += masks[name] * 1e6  # cannot be relaxed by degree
        else:
            total += np.clip(np.nan_to_num(shortfall[name] / scale[name], nan=1e6), 0, None)
    out = []
    for i in np.argsort(total, kind="stable")[:n]:
        misses = [name for name, m in masks.items() if m[i]]
        out.append(
            {
                "id": obj["id"].iat[i],
                "misses": misses,
                "hardware": float(obj["hardware"].iat[i]),
                "cost_per_hour": float(obj["cost_per_hour"].iat[i]),
                "job_usd": round(float(obj["job_usd"].iat[i]), 2),
                "latency_ms": round(float(obj["latency_ms"].iat[i]), 1),
                "total_gpu_memory_gb": float(obj["total_gpu_memory_gb"].iat[i]),
            }
        )
    return out


def select_server(
    servers: pd.DataFrame,
    constraints: Constraints,
    settings: ServerSettings,
    method: str | None = None,
    with_baselines: bool = True,
    job: JobProfile | None = None,
) -> Selection:
    """Filter, then choose a server with `method` (default: the spec's, normally PFG); baselines alongside.

    `job` (stratos.job_profile.job_profile) describes the job whose cost each server is estimated at;
    without it the estimate covers serving only, which ranks servers exactly as $/h does.
    """
    method = method or settings.method
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method '{method}'; use one of {', '.join(SELECTION_METHODS)}")
    obj = server_objectives(servers, constraints, settings)
    profile = job or serving_only(
        settings.job_estimate, "server selection got no job profile, so only serving is estimated"
    )
    obj["job_usd"] = planned_job_usd(profile, obj)
    if settings.cost_objective == "job":
        obj["cost"] = obj["job_usd"]
    masks, text = constraint_masks(obj, constraints, settings)
    infeasible = np.zeros(len(obj), dtype=bool)
    for m in masks.values():
        infeasible |= m
    feasible = ~infeasible
    x = normalise(obj, feasible)
    obj["feasible"] = feasible
    for j, name in enumerate(OBJECTIVES):
        obj[f"norm_{name}"] = x[:, j]
    eliminated = {name: int(m.sum()) for name, m in masks.items() if m.any()}
    extra = {"cost_objective": settings.cost_objective, "job_profile": profile}

    if not feasible.any():
        nearest = _nearest_feasible(obj, masks, constraints, settings)
        why = "; ".join(
            f"{text[n]}: {c} servers" for n, c in sorted(eliminated.items(), key=lambda kv: -kv[1])
        )
        return Selection(
            method,
            obj,
            None,
            [],
            [],
            None,
            {},
            eliminated,
            text,
            nearest,
            reason=f"no server satisfies every constraint ({why})",
            **extra,
        )

    idx = np.flatnonzero(feasible)
    ids = obj["id"].array  # pandas' string array: indexing subsets avoids 10^6 Python str objects
    cost = obj["cost"].to_numpy()
    pfg_local, front_local, pcells, cell = pfg_choice(
        x[idx],
        np.c_[obj["hardware"].to_numpy()[idx], -cost[idx], -obj["latency_ms"].to_numpy()[idx]],
        ids[idx],
        cost[idx],
        settings.grid_k,
        settings.sigma,
        settings.cost_objective == "job",
    )
    front_ids = sorted(ids[idx[front_local]].tolist())
    choices = {"pfg": int(idx[pfg_local])}
    for name in ("cost_first", "hardware_first", "random", "weighted_sum"):
        if with_baselines or name == method:
            choices[name] = baseline_choice(name, x, obj, idx, settings)
    chosen = choices[method]
    reason = _explain(method, obj.iloc[chosen], cell, len(front_ids), settings, serving_only=job is None)
    baselines = {name: str(ids[i]) for name, i in choices.items() if name != "pfg"}
    baselines["pfg"] = str(ids[choices["pfg"]])
    return Selection(
        method,
        obj,
        str(ids[chosen]),
        front_ids,
        [tuple(map(int, c)) for c in pcells],
        cell,
        baselines,
        eliminated,
        text,
        reason=reason,
        **extra,
    )


def _explain(
    method: str,
    row: pd.Series,
    cell: tuple[int, int, int],
    front_size: int,
    settings: ServerSettings,
    serving_only: bool,
) -> str:
    norm = f"hardware {row.norm_hardware:.2f}, cost {row.norm_cost:.2f}, latency {row.norm_latency:.2f} (1 = best)"
    axis = "$/h"
    if settings.cost_objective == "job":
        axis = "estimated job $" + (" of serving only: no job profile given" if serving_only else "")
    if method == "pfg":
        pick = "with the cheapest job" if settings.cost_objective == "job" else "nearest the ideal point"
        return (
            f"PFG (cost = {axis}): {front_size} servers are non-dominated; the Pareto cell with the lowest cost "
            f"index is (hardware, cost, latency) = {cell} on a {settings.grid_k}^3 grid, and {row.id} is the "
            f"server in it {pick}: {norm}"
        )
    return f"{method} (cost = {axis}): {row.id} ({norm})"


def selection_scores(
    selection: Selection, weights: tuple[float, float, float] | None = None
) -> dict[str, float]:
    """Multi-objective score (stratos.scoring) of the server each method chose."""
    if not selection.feasible:
        return {}
    s = selection.servers.set_index("id")
    cols = [f"norm_{n}" for n in OBJECTIVES]
    return {
        name: float(closeness_to_ideal(s.loc[[sid], cols].to_numpy(), weights)[0])
        for name, sid in selection.baselines.items()
    }
