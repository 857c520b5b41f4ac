"""The paper's comparison at server level: PFG beats cost-first, hardware-first and random on the score."""

from __future__ import annotations

from stratos.spec import ServerSettings
from tasks.catalog import load_catalogs
from tasks.server_comparison import compare_methods


def test_pfg_beats_cost_first_hardware_first_and_random_on_the_shipped_catalogs():
    settings = ServerSettings(planned_hours=4)
    servers, _ = load_catalogs(settings.catalog_paths())
    result = compare_methods(servers, settings)
    methods = result["methods"]
    assert result["scenarios"] >= 60
    for baseline in ("cost_first", "hardware_first", "random"):
        assert methods["pfg"]["mean_score"] > methods[baseline]["mean_score"], (baseline, methods)
        assert methods[baseline]["pfg_wins"] > methods[baseline]["pfg_losses"]
