"""Pareto Front Grid selection: properties over random catalogs, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratos.catalog import SERVER_COLUMNS
from stratos.pfg import grid_cells, non_dominated, select_server
from stratos.spec import Constraints, ServerSettings

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_servers(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    """Servers from (tflops, price, latency_ms, gpu_memory_gb) tuples; latency is 'measured'."""
    df = pd.DataFrame(rows, columns=["tflops", "price", "measured_latency_ms", "total_gpu_memory_gb"])
    df["id"] = [f"test/s{i:04d}/r" for i in range(len(df))]
    df["cloud"], df["instance_type"], df["region"], df["zone"], df["accelerator"] = (
        "test",
        "x",
        "r",
        "",
        "H100",
    )
    df["gpu_count"], df["gpu_memory_gb"], df["bandwidth_gbs"] = 1.0, df["total_gpu_memory_gb"], 2000.0
    df["spot_price"], df["lat"], df["lon"] = math.nan, math.nan, math.nan
    df["location_source"], df["location"], df["hardware_source"] = "exact", "", "exact"
    return df[SERVER_COLUMNS]


# Few distinct values per axis so ties and duplicates are common, as in real catalogs.
server_row = st.tuples(
    st.sampled_from([100.0, 250.0, 312.0, 989.0, 2000.0]) | st.floats(50, 5000),
    st.sampled_from([0.5, 1.0, 2.49, 4.0]) | st.floats(0.1, 40),
    st.sampled_from([2.0, 15.0, 80.0]) | st.floats(1, 300),
    st.sampled_from([24.0, 48.0, 80.0, 160.0]),
)
catalogs = st.lists(server_row, min_size=1, max_size=60)
LOOSE = Constraints(region="us-east", max_latency_ms=250, budget_usd=1000, max_hourly_usd=30)
SETTINGS = ServerSettings(planned_hours=2, cost_objective="hourly")  # cost axis $/h; job: test_job_cost.py


def reference_front(obj: pd.DataFrame) -> set[str]:
    """Non-dominated feasible servers by direct pairwise comparison on raw objectives."""
    f = obj[obj["feasible"]]
    vals = np.c_[f["hardware"], -f["cost_per_hour"], -f["latency_ms"]]  # larger is better
    out = set()
    for i, sid in enumerate(f["id"]):
        beaten = any((vals[j] >= vals[i]).all() and (vals[j] > vals[i]).any() for j in range(len(vals)))
        if not beaten:
            out.add(sid)
    return out


@FAST
@given(catalogs)
def test_front_is_exactly_the_non_dominated_feasible_set(rows):
    sel = select_server(make_servers(rows), LOOSE, SETTINGS)
    if not sel.feasible:
        assert not sel.servers["feasible"].any()
        return
    assert set(sel.front) == reference_front(sel.servers)
    assert sel.chosen in sel.front


def test_a_server_one_ulp_slower_is_off_the_front():
    # Found by the property above: min-max scaling rounded 1.0 and 1.0000000000000002 ms together.
    rows = [(100.0, 0.5, 2.0, 24.0), (100.0, 0.5, 15.0, 24.0), (100.0, 0.5, 1.0, 24.0)]
    rows.append((100.0, 0.5, math.nextafter(1.0, 2.0), 24.0))
    sel = select_server(make_servers(rows), LOOSE, SETTINGS)
    assert sel.front == ["test/s0002/r"] == sorted(reference_front(sel.servers))


@FAST
@given(catalogs, st.randoms(use_true_random=False))
def test_choice_is_invariant_to_row_order(rows, rnd):
    servers = make_servers(rows)
    shuffled = servers.sample(frac=1.0, random_state=rnd.randint(0, 10**6)).reset_index(drop=True)
    a, b = select_server(servers, LOOSE, SETTINGS), select_server(shuffled, LOOSE, SETTINGS)
    assert (a.chosen, a.front, a.baselines, a.pareto_cells) == (
        b.chosen,
        b.front,
        b.baselines,
        b.pareto_cells,
    )


unknown_location_row = st.tuples(
    st.sampled_from([100.0, 989.0, 2000.0]) | st.floats(50, 5000),
    st.sampled_from([0.5, 1.0, 4.0]) | st.floats(0.1, 40),
    st.sampled_from([24.0, 80.0, 160.0]),
)


@FAST
@given(catalogs, st.lists(unknown_location_row, min_size=1, max_size=20))
def test_rows_of_unknown_location_never_push_a_known_server_off_the_front(rows, unknown):
    wide = LOOSE.model_copy(update={"max_latency_ms": 1000})  # so the unknown rows stay feasible
    known = make_servers(rows)
    extra = make_servers([(t, p, math.nan, m) for t, p, m in unknown])  # no LatencyMs, no coordinates
    extra["id"] = extra["id"].str.replace("/s", "/u", regex=False)
    extra["location_source"] = "assumed"
    before = select_server(known, wide, SETTINGS)
    after = select_server(pd.concat([known, extra], ignore_index=True), wide, SETTINGS)
    assert set(before.front) <= set(after.front)
    s = after.servers
    assumed = s["location_assumed"]
    assert assumed.sum() == len(extra)
    assert (s.loc[assumed, "latency_ms"] > s.loc[~assumed, "latency_ms"].max()).all()


def reference_pfg(obj: pd.DataFrame, k: int, sigma: float) -> tuple[int, int, int]:
    """The chosen cell, computed with loops straight from the spec's formula."""
    f = obj[obj["feasible"] & obj["id"].isin(reference_front(obj))]
    r = (1 + 2 * sigma) / k
    cells = {
        tuple(math.ceil((1 - x + sigma) / r - 1e-12) for x in row)
        for row in f[["norm_hardware", "norm_cost", "norm_latency"]].itertuples(index=False)
    }

    def dominated(c):
        return any(all(o[j] <= c[j] for j in range(3)) and o != c for o in cells)

    pareto = [c for c in cells if not dominated(c)]
    return min(pareto, key=lambda c: (c[1], sum(c), c[0], c[2]))


@FAST
@given(catalogs, st.integers(1, 12))
def test_chosen_cell_matches_the_spec_formula(rows, k):
    cfg = SETTINGS.model_copy(update={"grid_k": k})
    sel = select_server(make_servers(rows), LOOSE, cfg)
    if sel.feasible:
        assert sel.chosen_cell == reference_pfg(sel.servers, k, cfg.sigma)
        row = sel.row(sel.chosen)
        in_cell = sel.servers[sel.servers["id"].isin(sel.front)]
        dist = np.linalg.norm(1 - in_cell[["norm_hardware", "norm_cost", "norm_latency"]].to_numpy(), axis=1)
        cells = grid_cells(in_cell[["norm_hardware", "norm_cost", "norm_latency"]].to_numpy(), k, cfg.sigma)
        mine = (cells == np.array(sel.chosen_cell)).all(axis=1)
        assert np.linalg.norm(
            1 - row[["norm_hardware", "norm_cost", "norm_latency"]].to_numpy(float)
        ) == pytest.approx(dist[mine].min())


def test_k1_is_nearest_to_ideal_among_the_front():
    servers = make_servers([(100, 1, 10, 80), (900, 3, 10, 80), (1000, 10, 5, 80), (500, 2, 50, 80)])
    sel = select_server(servers, LOOSE, SETTINGS.model_copy(update={"grid_k": 1}))
    assert sel.pareto_cells == [(1, 1, 1)]
    norm = sel.servers.set_index("id").loc[sel.front, ["norm_hardware", "norm_cost", "norm_latency"]]
    assert sel.chosen == (1 - norm).pow(2).sum(axis=1).idxmin()


def test_identical_servers_are_both_on_the_front_and_the_tie_breaks_by_id():
    servers = make_servers([(500, 2, 10, 80), (500, 2, 10, 80), (100, 5, 50, 80)])
    sel = select_server(servers, LOOSE, SETTINGS)
    assert sel.front == ["test/s0000/r", "test/s0001/r"]
    assert sel.chosen == "test/s0000/r"


def test_single_feasible_server_is_chosen_by_every_method():
    sel = select_server(make_servers([(500, 2, 10, 80), (100, 50, 10, 80)]), LOOSE, SETTINGS)
    assert sel.chosen == "test/s0000/r"
    assert set(sel.baselines.values()) == {"test/s0000/r"}


def test_baselines_pick_what_their_names_say():
    rows = [(100, 0.5, 100, 80), (3000, 20, 100, 80), (900, 2, 5, 80), (950, 2.1, 6, 80)]
    sel = select_server(make_servers(rows), LOOSE, SETTINGS)
    assert sel.baselines["cost_first"] == "test/s0000/r"
    assert sel.baselines["hardware_first"] == "test/s0001/r"
    assert sel.baselines["random"] in sel.servers["id"].tolist()
    again = select_server(make_servers(rows), LOOSE, SETTINGS)
    assert again.baselines["random"] == sel.baselines["random"]  # seeded


def test_infeasible_reports_each_constraint_and_the_nearest_servers():
    rows = [(100, 50, 10, 24), (3000, 2, 400, 160), (900, 8, 20, 48)]
    tight = Constraints(
        region="us-east", max_latency_ms=100, budget_usd=100, max_hourly_usd=5, min_gpu_memory_gb=80
    )
    sel = select_server(make_servers(rows), tight, SETTINGS)
    assert sel.chosen is None and sel.front == []
    assert sel.eliminated == {"gpu_memory": 2, "hourly_cap": 2, "latency": 1}
    assert len(sel.nearest_feasible) == 3
    assert sel.nearest_feasible[0]["misses"]  # each one says what it misses
    assert "no server satisfies" in sel.reason


def test_filters_hold_for_the_chosen_server():
    rng = np.random.default_rng(3)
    rows = [
        (rng.uniform(50, 5000), rng.uniform(0.1, 40), rng.uniform(1, 300), rng.choice([24.0, 80, 160]))
        for _ in range(300)
    ]
    c = Constraints(
        region="us-east", max_latency_ms=120, budget_usd=60, max_hourly_usd=12, min_gpu_memory_gb=80
    )
    sel = select_server(make_servers(rows), c, SETTINGS)
    for sid in [sel.chosen, *sel.baselines.values()]:
        row = sel.row(sid)
        assert (
            row.feasible
            and row.cost_per_hour <= 12
            and row.latency_ms <= 120
            and row.total_gpu_memory_gb >= 80
        )
        assert row.cost_per_hour * SETTINGS.planned_hours <= 60


def naive_mask(x: np.ndarray) -> np.ndarray:
    return np.array([not ((x >= p).all(axis=1) & (x > p).any(axis=1)).any() for p in x])


@pytest.mark.parametrize("n, distinct", [(1, 0), (700, 4), (3000, 0), (3000, 6)])
def test_non_dominated_matches_naive_across_sweep_blocks(n, distinct):
    rng = np.random.default_rng(n + distinct)
    x = rng.random((n, 3))
    if distinct:  # heavy ties, like hardware/latency in real catalogs
        x[:, 0] = rng.integers(distinct, size=n) / distinct
        x[:, 2] = rng.integers(distinct, size=n) / distinct
    assert (non_dominated(x) == naive_mask(x)).all()


def test_grid_cells_cover_1_to_k_without_off_by_one():
    k, sigma = 10, 0.01
    x = np.array([[1.0, 0.0, 0.5], [0.95, 0.9, 0.899]])
    g = grid_cells(x, k, sigma)
    r = (1 + 2 * sigma) / k
    assert g[0].tolist() == [1, k, math.ceil((0.5 + sigma) / r)]
    assert g[1].tolist() == [1, 2, 2]  # (1-0.95+0.01)/0.102 = 0.59 -> 1; (0.1+0.01)/0.102 = 1.08 -> 2
    assert g.min() >= 1 and g.max() <= k


def test_the_chosen_row_describes_the_server_for_later_stages():
    sel = select_server(make_servers([(500, 2, 10, 80), (100, 5, 50, 80)]), LOOSE, SETTINGS)
    row = sel.row(sel.chosen)
    for column in (
        "total_gpu_memory_gb",
        "gpu_count",
        "tflops",
        "bandwidth_gbs",
        "accelerator",
        "cost_per_hour",
        "latency_ms",
    ):
        assert column in row.index, column
