"""SkyPilot's optimizer agrees with Stratos (issue 17, first provision test). Needs the SkyPilot venv.

For the example specs and for servers chosen on each shipped cloud (several selection methods, on-
demand and spot), the task Stratos generates goes to SkyPilot 0.14.1's own optimizer, run offline
over Stratos's catalogs (stratos/sky_helpers/plan.py: hand-placed catalogs under a temporary HOME,
the catalogs' clouds enabled by replacing SkyPilot's enabled-cloud lookup). SkyPilot must pick
exactly the instance type, region and zone Stratos chose, at the catalog price Stratos planned with.

Skipped when the venv is absent: create it with `bash scripts/setup-sky.sh` (about a minute).
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
from conftest import free_port

from stratos.catalog import load_catalogs
from stratos.cli import main
from stratos.pfg import select_server
from stratos.provision.clusters import load_record
from stratos.provision.launchers import LaunchFailed, SkyLauncher
from stratos.provision.plan import agrees, render_provision_plan, stratos_choice
from stratos.provision.sky import SKY_ACCELERATORS, SkyNotInstalled, sky_bin, sky_plan
from stratos.provision.task import NO_DOCKER_IMAGE, SKY_CLOUDS, cluster_name, server_row, sky_task
from stratos.spec import Constraints, ProvisionSettings, ServerSettings, load_spec

ROOT = Path(__file__).resolve().parents[1]
CLOUDS = ("lambda", "runpod", "cudo", "nebius")
METHODS = ("pfg", "cost_first", "hardware_first", "weighted_sum")
PIP = ProvisionSettings(setup="pip", pip_requirement="stratos @ git+https://github.com/you/stratos@v0.1.0")
IMAGE = ProvisionSettings(image="ghcr.io/you/stratos-gpu-worker:0.1.0")


def _sky_missing() -> str | None:
    try:
        sky_bin()
    except SkyNotInstalled:
        return "no SkyPilot venv: create it with `bash scripts/setup-sky.sh` (or set STRATOS_SKY)"
    return None


pytestmark = pytest.mark.skipif(_sky_missing() is not None, reason=str(_sky_missing()))


def example_choices() -> list[tuple[str, str, bool]]:
    """(label, chosen server, spot) for every example spec whose servers are feasible."""
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        spec = load_spec(path)
        servers, _ = load_catalogs(spec.servers.catalog_paths())
        selection = select_server(servers, spec.constraints, spec.servers)
        if selection.feasible:
            out.append((path.name, selection.chosen, spec.servers.use_spot))
    return out


def cloud_choices() -> list[tuple[str, str, bool]]:
    """Servers chosen on each shipped cloud alone, by each selection method, on-demand and spot."""
    catalogs = ServerSettings().catalog_paths()
    out = []
    for cloud in CLOUDS:
        paths = [p for p in catalogs if p.stem == cloud]
        servers, _ = load_catalogs(paths)
        for spot in (False, True):
            if spot and servers["spot_price"].isna().all():
                continue  # Lambda and Cudo sell no spot instances
            settings = ServerSettings(catalogs=[str(p) for p in paths], use_spot=spot, planned_hours=1)
            for region in ("us-east", "eu-west"):
                constraints = Constraints(region=region, budget_usd=10_000, max_latency_ms=400)
                for method in METHODS:
                    chosen = select_server(servers, constraints, settings, method=method).chosen
                    out.append((f"{cloud}/{method}/{region}{'/spot' if spot else ''}", chosen, spot))
    return out


@pytest.fixture(scope="module")
def agreement() -> list[tuple[str, dict, dict]]:
    """(label, Stratos's choice, SkyPilot's plan) for every case, planned in one SkyPilot process."""
    catalogs = ServerSettings().catalog_paths()
    cases = example_choices() + cloud_choices()
    rows = [(label, server_row(server, catalogs), spot) for label, server, spot in cases]
    tasks = [
        sky_task(row, PIP, pool="p", api_url="https://prefect.example.com/api", run_name="r", use_spot=spot)
        for _, row, spot in rows
    ]
    plans = sky_plan(tasks, catalogs)["plans"]
    return [
        (label, stratos_choice(row, spot), plan) for (label, row, spot), plan in zip(rows, plans, strict=True)
    ]


def test_skypilot_picks_the_instance_and_region_stratos_chose(agreement):
    disagreements = [(label, mine, sky) for label, mine, sky in agreement if not agrees(mine, sky)]
    assert not disagreements, disagreements
    assert {mine["cloud"] for _, mine, _ in agreement} == set(CLOUDS)
    assert any(label.endswith(".yaml") for label, _, _ in agreement)  # the example specs are in
    assert any(mine["use_spot"] for _, mine, _ in agreement)


def test_skypilot_prices_it_as_stratos_planned(agreement):
    for label, mine, sky in agreement:
        assert sky["hourly_usd"] == pytest.approx(mine["hourly_usd"], abs=1e-9), label
        assert sky["use_spot"] == mine["use_spot"], label


def test_the_worker_image_plans_where_skypilot_runs_docker_and_only_there():
    catalogs = ServerSettings().catalog_paths()
    servers, _ = load_catalogs(catalogs)
    rows = [server_row(servers[servers["cloud"] == cloud]["id"].iloc[0], catalogs) for cloud in CLOUDS]
    tasks = [sky_task(row, IMAGE, pool="p", api_url="https://x/api", run_name="r") for row in rows]
    plans = sky_plan(tasks, catalogs)["plans"]
    for row, plan in zip(rows, plans, strict=True):
        if row.cloud in NO_DOCKER_IMAGE:  # why check_launchable refuses setup: image there
            assert not plan["ok"], plan
        else:
            assert agrees(stratos_choice(row, False), plan), plan


def test_a_server_the_catalog_lists_twice_still_plans():
    """RunPod's catalog repeats 2x_B200_SECURE row for row in 14 zones; SkyPilot asserts one row per zone."""
    catalogs = ServerSettings().catalog_paths()
    row = server_row("runpod/2x_B200_SECURE/US/US-CA-1", catalogs)
    task = sky_task(row, PIP, pool="p", api_url="https://x/api", run_name="r")
    plan = sky_plan([task], catalogs)["plans"][0]
    assert agrees(stratos_choice(row, False), plan) and plan["hourly_usd"] == row.price


def test_catalog_version_and_cloud_names_are_skypilots():
    answer = sky_plan([], ServerSettings().catalog_paths())
    assert answer["catalog_version"] == "v8" and answer["catalog_dir"].endswith("/.sky/catalogs/v8")
    registry = subprocess.run(
        [
            str(sky_bin() / "python"),
            "-c",
            "from sky.utils import registry; print(sorted(registry.CLOUD_REGISTRY))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert set(ast.literal_eval(registry.strip().splitlines()[-1])) == SKY_CLOUDS


def test_plan_cli_prints_both_plans_for_the_gpu_example(capsys):
    assert main(["plan", str(ROOT / "examples/gsm8k-gpu.yaml"), "--provision-plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["provision_plan"]
    assert plan["agrees"] and plan["skypilot"]["instance_type"] == plan["stratos"]["instance_type"]
    assert plan["skypilot_cheapest"]["ok"]
    text = render_provision_plan(plan)
    assert "SkyPilot agrees" in text and "SkyPilot alone" in text and "stratos.provision.worker" in text


@pytest.fixture()
def sky_api_server(tmp_path, monkeypatch):
    """A private SkyPilot home (catalogs placed, no credentials) whose local API server is stopped after."""
    home = tmp_path / "home"
    catalogs = home / ".sky" / "catalogs" / "v8"
    for path in ServerSettings().catalog_paths():
        (catalogs / path.stem).mkdir(parents=True)
        (catalogs / path.stem / "vms.csv").write_bytes(path.read_bytes())
    (catalogs / "common").mkdir()
    (catalogs / "common" / "accelerators.csv").write_bytes(SKY_ACCELERATORS.read_bytes())
    monkeypatch.setenv("STRATOS_SKY", str(sky_bin()))  # found before HOME moves
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "stratos"))
    monkeypatch.setenv("SKYPILOT_API_SERVER_LOCAL_PORT", str(free_port()))
    monkeypatch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    monkeypatch.delenv("SKY_RUNTIME_DIR", raising=False)
    yield home
    subprocess.run([str(sky_bin() / "sky"), "api", "stop"], capture_output=True, timeout=120)


def test_sky_launcher_through_skypilots_api_server_fails_cleanly_without_credentials(sky_api_server):
    """The real SDK path: status, a launch SkyPilot refuses (no cloud enabled), the teardown after it."""
    settings = PIP.model_copy(update={"enabled": True, "launch_timeout_s": 300.0})
    launcher = SkyLauncher(settings)
    assert launcher.status() == []
    row = server_row("lambda/gpu_1x_a10/us-east-1", ServerSettings().catalog_paths())
    name = cluster_name("sky-no-credentials", row.id)
    task = sky_task(
        row, settings, pool=name, api_url="https://prefect.example.com/api", run_name="sky-no-credentials"
    )
    with pytest.raises(LaunchFailed) as err:
        launcher.launch(name, task)
    assert (
        err.value.reason == "other"
        and "NoCloudAccessError" in str(err.value)
        and "sky check" in str(err.value)
    )
    record = load_record(name)
    assert record.status == "failed" and "\x1b[" not in record.reason and record.ended_at is not None
    assert launcher.down(name).status == "failed"  # downing it again is harmless and keeps the reason
