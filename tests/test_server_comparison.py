"""The paper's comparison at server level: PFG beats cost-first, hardware-first and random on the score,
with either cost objective ($/h, or the estimated job cost)."""

from __future__ import annotations

from pathlib import Path

from stratos.catalog import load_catalogs
from stratos.job_profile import job_profile
from stratos.server_comparison import compare_methods
from stratos.spec import ServerSettings, load_spec


def test_pfg_beats_cost_first_hardware_first_and_random_on_the_shipped_catalogs():
    settings = ServerSettings(planned_hours=4, cost_objective="hourly")
    servers, _ = load_catalogs(settings.catalog_paths())
    result = compare_methods(servers, settings)
    methods = result["methods"]
    assert result["scenarios"] >= 60
    for baseline in ("cost_first", "hardware_first", "random"):
        assert methods["pfg"]["mean_score"] > methods[baseline]["mean_score"], (baseline, methods)
        assert methods[baseline]["pfg_wins"] > methods[baseline]["pfg_losses"]


def test_pfg_also_beats_them_with_the_job_cost_objective():
    # The cost axis is each server's estimated cost of the examples/gsm8k-gpu.yaml job (budget by estimate).
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples/gsm8k-gpu.yaml")
    settings = ServerSettings(cost_objective="job")
    servers, _ = load_catalogs(settings.catalog_paths())
    methods = compare_methods(servers, settings, job=job_profile(spec))["methods"]
    for baseline in ("cost_first", "hardware_first", "random"):
        assert methods["pfg"]["mean_score"] > methods[baseline]["mean_score"], (baseline, methods)
        assert methods[baseline]["pfg_wins"] > methods[baseline]["pfg_losses"]
