"""`stratos plan` on the shipped real catalogs: JSON completeness and consistency, tables, plot, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stratos.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples/plan.yaml")


@pytest.fixture(scope="module")
def plan_json():
    out = subprocess.run(
        [sys.executable, "-m", "stratos.cli", "plan", EXAMPLE, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
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


GPU_SPEC = str(ROOT / "examples/gsm8k-gpu.yaml")


def test_plan_job_json_has_each_servers_estimate_and_the_choice_under_both_objectives():
    out = subprocess.run(
        [sys.executable, "-m", "stratos.cli", "plan", GPU_SPEC, "--job", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    ).stdout
    plan = json.loads(out)
    for server in plan["servers"]:
        est = server["job_estimate"]
        assert est["low"] <= est["planned"] <= est["high"]
        assert est["planned"] == pytest.approx(server["job_usd"], abs=1e-3)
        assert sum(s["planned"] for s in est["by_stage"].values()) == pytest.approx(est["planned"], abs=1e-3)
    choices = plan["choice_by_objective"]
    assert set(choices) == {"hourly", "job"} and choices["job"]["chosen"] == plan["chosen"]
    assert plan["cost_objective"] == "job"
    assumed = plan["job_assumptions"]
    assert set(assumed) == {"synthesis", "training", "evaluation", "serving"}
    # hub ids offline: sizes read from the names, and the output says so
    assert any("from the name (no config offline)" in a for a in assumed["training"]["assumed"])
    assert "task.train_size" in assumed["synthesis"]["depends_on"]


def test_plan_job_tables(capsys):
    assert main(["plan", GPU_SPEC, "--job"]) == 0
    out = capsys.readouterr().out
    assert "Job estimate, USD (planned; low-high)" in out and "Choice by cost objective" in out
    assert "\n  hourly " in out and "\n  job " in out and "synthesis: depends on" in out


def test_json_says_how_each_server_was_resolved(plan_json):
    first = plan_json["servers"][0]
    assert {first["location_source"], first["hardware_source"]} == {"exact"} and first["location"]
    assert plan_json["location_assumed"] == {
        "servers": 0,
        "feasible": 0,
        "on_front": 0,
        "chosen": False,
        "latency_ms": None,
    }
    assert plan_json["catalog"]["location_layers"] == {"exact": plan_json["catalog"]["rows_kept"]}
    assert plan_json["catalog"]["warnings"] == []


def write_catalog(path: Path, gpu_rows: int, bad_rows: int, cpu_rows: int) -> None:
    rows = [f"g{i},H100,1,8,64,2.5,us-east-1,," for i in range(gpu_rows)]
    rows += [f"bad{i},H100,1,8,64,,us-east-1,," for i in range(bad_rows)]
    rows += [f"cpu{i},,,8,64,0.2,us-east-1,," for i in range(cpu_rows)]
    path.write_text(HEADER + "\n".join(rows) + "\n")


HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\n"


@pytest.mark.parametrize("json_mode", [False, True])
def test_plan_warns_on_the_terminal_when_many_gpu_rows_are_unusable(tmp_path, capsys, json_mode):
    write_catalog(tmp_path / "flaky.csv", gpu_rows=18, bad_rows=2, cpu_rows=50)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"servers: {{catalogs: [{tmp_path / 'flaky.csv'}]}}\n")
    assert main(["plan", str(spec), *(["--json"] if json_mode else [])]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of 20 GPU rows (10.0%) are unusable" in err
    assert "missing price: give every row a Price in USD per hour" in err


def test_cpu_only_rows_are_counted_but_do_not_warn(tmp_path, capsys):
    write_catalog(tmp_path / "mostly_cpu.csv", gpu_rows=20, bad_rows=0, cpu_rows=500)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"servers: {{catalogs: [{tmp_path / 'mostly_cpu.csv'}]}}\n")
    assert main(["plan", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "500 CPU-only" in err


def test_plan_over_other_clouds_reports_layers_and_assumed_locations(tmp_path, capsys):
    catalogs = sorted(str(p) for p in (ROOT / "tests/data/catalogs").glob("*.csv"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"constraints: {{region: us-east, budget_usd: 500}}\nservers: {{catalogs: {catalogs}}}\n")
    assert main(["plan", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "location: 3 exact, 120 parsed, 40 centroid, 9 assumed" in captured.err
    assert "9 servers rest on an assumed location ('UNSPECIFIED' x5" in captured.err
    assert "warning" not in captured.err
    assert "rest on an assumed location: their round trip is the worst case, 282 ms" in captured.out
    assert main(["plan", str(spec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_source = {s["location_source"] for s in data["servers"]}
    assert by_source == {"exact", "parsed", "centroid", "assumed"}
    assert all(
        s["latency_ms"] == pytest.approx(282.2, abs=0.1)
        for s in data["servers"]
        if s["location_source"] == "assumed"
    )
    assert data["location_assumed"]["servers"] == 9
