"""`stratos plan` on the shipped real catalogs: JSON completeness and consistency, tables, plot, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stratos.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples/plan.yaml")


@pytest.fixture(scope="module")
def plan_json():
    out = subprocess.run([sys.executable, "-m", "stratos.cli", "plan", EXAMPLE, "--json"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def test_json_is_complete(plan_json):
    assert {"chosen", "pareto_front", "baselines", "eliminated", "servers"} <= set(plan_json)
    assert set(plan_json["baselines"]) >= {"cost_first", "hardware_first", "random", "weighted_sum"}
    assert set(plan_json["servers"][0]) >= {"id", "hardware", "cost_per_hour", "latency_ms", "feasible"}


def test_json_is_consistent(plan_json):
    servers = {s["id"]: s for s in plan_json["servers"]}
    assert len(servers) == len(plan_json["servers"])
    chosen = servers[plan_json["chosen"]]
    assert chosen["feasible"] and plan_json["chosen"] in plan_json["pareto_front"]
    assert all(servers[i]["feasible"] for i in plan_json["pareto_front"])
    assert all(servers[i]["feasible"] for i in plan_json["baselines"].values())
    # The example's constraints hold for the choice (min 80 GB, <= $12/h, <= 80 ms, 4 h within $200).
    assert chosen["cost_per_hour"] <= 12 and chosen["latency_ms"] <= 80
    infeasible = sum(not s["feasible"] for s in plan_json["servers"])
    assert max(plan_json["eliminated"].values()) <= infeasible <= sum(plan_json["eliminated"].values())
    cheapest = min(s["cost_per_hour"] for s in plan_json["servers"] if s["feasible"])
    assert servers[plan_json["baselines"]["cost_first"]]["cost_per_hour"] == cheapest
    top = max(s["hardware"] for s in plan_json["servers"] if s["feasible"])
    assert servers[plan_json["baselines"]["hardware_first"]]["hardware"] == top
    assert plan_json["scores"]["pfg"] > plan_json["scores"]["cost_first"]


def test_table_output_and_plot(tmp_path, capsys):
    png = tmp_path / "front.png"
    assert main(["plan", EXAMPLE, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (" in out and "Chosen: " in out and "cost_first" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_infeasible_plan_exits_3_with_a_report(tmp_path, capsys):
    spec = tmp_path / "tight.yaml"
    spec.write_text(
        "constraints: {region: australia, min_gpu_memory_gb: 2000, max_hourly_usd: 1, budget_usd: 10}\n"
    )
    assert main(["plan", str(spec)]) == 3
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "total GPU memory below 2000 GB" in out and "Nearest to feasible" in out
    assert main(["plan", str(spec), "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"] is None and data["eliminated"]["gpu_memory"] > 0 and data["nearest_feasible"]


def test_bad_spec_exits_2_with_one_clear_message(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("constraints: {budget_usd: -1}\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "stratos"), "plan", str(spec)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "constraints.budget_usd' = -1" in proc.stderr and "Traceback" not in proc.stderr
