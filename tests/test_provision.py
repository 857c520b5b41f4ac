"""Provisioning without a cloud: the spec section, the SkyPilot task, cluster names, and bad input (issue 17).

Bad input must stop with one clear message before anything is launched: these tests check the
message and that the cluster registry is still empty afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from stratos.catalog import load_catalogs
from stratos.cli import main
from stratos.provision.clusters import list_records
from stratos.provision.launchers import launch_failure, prepare
from stratos.provision.sky import SkyNotInstalled
from stratos.provision.task import (
    CLUSTER_NAME_MAX,
    NotLaunchable,
    ServerRow,
    cluster_name,
    server_row,
    sky_task,
)
from stratos.spec import ProvisionSettings, ServerSettings, SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[1]
CATALOGS = ServerSettings().catalog_paths()
SKY_NAME = re.compile(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?")  # SkyPilot 0.14.1's CLUSTER_NAME_VALID_REGEX
REMOTE = "https://prefect.example.com/api"
ENABLED = {
    "enabled": True,
    "setup": "pip",
    "pip_requirement": "stratos @ git+https://github.com/you/stratos@v0.1.0",
}


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """A private STRATOS_HOME (the cluster registry) and no SkyPilot venv unless a test gives one."""
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "stratos"))
    monkeypatch.setenv("STRATOS_SKY", str(tmp_path / "no-sky-venv"))


@pytest.fixture(scope="module")
def servers():
    return load_catalogs(CATALOGS)[0]


def a_row(cloud: str = "lambda", **fields) -> ServerRow:
    base = dict(
        id=f"{cloud}/x/r",
        cloud=cloud,
        instance_type="x",
        region="r",
        zone="",
        accelerator="A10",
        accelerator_count=1,
        price=1.0,
        spot_price=None,
    )
    return ServerRow(**{**base, **fields})


@pytest.mark.parametrize("cloud", ["lambda", "runpod", "cudo", "nebius"])
def test_server_row_is_the_catalog_row_stratos_priced(servers, cloud):
    """The raw row behind an id carries the same instance, region, zone, GPU count and price as the server table."""
    sample = servers[servers["cloud"] == cloud].sample(20, random_state=0)
    for s in sample.itertuples():
        row = server_row(s.id, CATALOGS)
        assert (row.cloud, row.instance_type, row.region, row.zone) == (
            s.cloud,
            s.instance_type,
            s.region,
            s.zone,
        )
        assert row.accelerator_count == s.gpu_count and row.price == s.price


def test_server_row_keeps_the_clouds_own_accelerator_spelling():
    # Stratos normalises RunPod's 'H200-SXM' to 'H200'; SkyPilot only knows RunPod's own name.
    assert server_row("runpod/1x_H200-SXM_SECURE/US/US-KS-2", CATALOGS).accelerator == "H200-SXM"
    with pytest.raises(ValueError, match="in none of the catalogs"):
        server_row("lambda/no-such-type/us-east-1", CATALOGS)


def test_sky_task_pins_the_row_and_runs_the_worker_for_the_pool():
    row = server_row("runpod/1x_H200-SXM_SECURE/US/US-KS-2", CATALOGS)
    settings = ProvisionSettings(image="ghcr.io/you/stratos-gpu-worker:0.1.0")
    task = sky_task(row, settings, pool="p1", api_url=REMOTE, run_name="r", flow_run_id="abc", use_spot=True)
    assert task["resources"] == {
        "cloud": "runpod",
        "region": "US",
        "zone": "US-KS-2",
        "instance_type": "1x_H200-SXM_SECURE",
        "accelerators": {"H200-SXM": 1},
        "use_spot": True,
        "image_id": "docker:ghcr.io/you/stratos-gpu-worker:0.1.0",
    }
    assert task["envs"]["PREFECT_API_URL"] == REMOTE and task["envs"]["STRATOS_POOL"] == "p1"
    assert task["envs"]["STRATOS_FLOW_RUN_ID"] == "abc"
    assert task["envs"]["STRATOS_PYTHON"] == "/opt/stratos/.venv/bin/python"  # docker/gpu-worker.Dockerfile
    assert "setup" not in task and "stratos.provision.worker" in task["run"]
    yaml.safe_dump(task)  # plain data: it is written as the task YAML


def test_pip_setup_installs_the_pinned_requirement_in_its_own_venv():
    settings = ProvisionSettings(**ENABLED)
    task = sky_task(a_row(), settings, pool="p", api_url=REMOTE, run_name="r")
    assert "stratos @ git+https://github.com/you/stratos@v0.1.0" in task["setup"]
    assert "torch==2.13.0" in task["setup"] and "--python 3.11" in task["setup"]
    assert task["envs"]["STRATOS_PYTHON"] == "$HOME/stratos-venv/bin/python"
    assert "image_id" not in task["resources"] and "zone" not in task["resources"]


def test_cluster_names_are_valid_for_skypilot_stable_and_per_server():
    names = [
        cluster_name(run, server)
        for run in ("gsm8k-gpu", "My Run_2026!", "x" * 80, "---")
        for server in ("lambda/gpu_1x_a10/us-east-1", "runpod/1x_A40_SECURE/CA/CA-MTL-1")
    ]
    for name in names:
        assert SKY_NAME.fullmatch(name) and name == name.lower() and len(name) <= CLUSTER_NAME_MAX
    assert len(set(names)) == len(names)
    assert cluster_name("gsm8k-gpu", "lambda/gpu_1x_a10/us-east-1") == names[0]  # a re-run finds its cluster
    assert names[0].startswith("stratos-gsm8k-gpu-")


def test_launch_failures_are_classified_for_fail_over():
    assert (
        launch_failure("ResourcesUnavailableError", "Failed to acquire resources in all zones").reason
        == "capacity"
    )
    assert launch_failure("ResourcesUnavailableError", "InsufficientInstanceCapacity").reason == "capacity"
    assert (
        launch_failure("ResourcesUnavailableError", "Quota exceeded for GPUS_ALL_REGIONS").reason == "quota"
    )
    assert launch_failure("Timeout", "took over 1800s").reason == "other"
    assert launch_failure("InvalidCloudCredentials", "no API key").reason == "other"


def test_provisioning_is_off_by_default_and_the_embedded_default_unchanged():
    spec = parse_spec({})
    assert spec.provision.enabled is False and spec.provision.down is True


# ---------------------------------------------------------------- bad input, before anything is launched


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api", "http://0.0.0.0/api"],
)
def test_loopback_prefect_url_with_skypilot_is_rejected_in_the_spec(url):
    with pytest.raises(SpecError) as err:
        parse_spec({"provision": {**ENABLED, "prefect_api_url": url}, "storage": {"uri": "s3://b/p"}})
    message = str(err.value)
    assert "provision.prefect_api_url" in message and url in message and "cloud VM cannot reach" in message


def test_loopback_url_is_fine_for_the_local_stand_in():
    spec = parse_spec(
        {"provision": {"enabled": True, "backend": "local", "prefect_api_url": "http://127.0.0.1:1/api"}}
    )
    assert spec.provision.backend == "local"


def test_loopback_url_from_prefects_settings_is_rejected_before_launch():
    settings = ProvisionSettings(**ENABLED)  # no prefect_api_url: the process's PREFECT_API_URL is used
    loopback = {PREFECT_API_URL: "http://127.0.0.1:4200/api"}
    with (
        temporary_settings(updates=loopback),
        pytest.raises(ValueError, match="loopback address, which a cloud"),
    ):
        prepare(settings, a_row())
    assert list_records() == []


def test_unknown_cloud_in_the_chosen_row_is_rejected_before_launch():
    settings = ProvisionSettings(**ENABLED, prefect_api_url=REMOTE)
    with pytest.raises(NotLaunchable, match="cloud 'mycloud', which SkyPilot cannot launch on"):
        prepare(settings, a_row("mycloud"))
    assert list_records() == []


def test_docker_image_on_a_cloud_without_docker_is_rejected_before_launch():
    settings = ProvisionSettings(enabled=True, image="ghcr.io/you/w:1", prefect_api_url=REMOTE)
    with pytest.raises(NotLaunchable, match="cannot run a docker image on 'cudo'.*setup: pip"):
        prepare(settings, a_row("cudo"))


def test_missing_skypilot_venv_is_one_clear_error_before_launch(tmp_path):
    settings = ProvisionSettings(**ENABLED, prefect_api_url=REMOTE)
    with pytest.raises(SkyNotInstalled, match=r"no SkyPilot venv at .*scripts/setup-sky\.sh"):
        prepare(settings, a_row())
    assert list_records() == []


def test_plan_without_the_skypilot_venv_exits_2_naming_the_setup_script(capsys):
    assert main(["plan", str(ROOT / "examples/plan.yaml"), "--provision-plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no SkyPilot venv") and "scripts/setup-sky.sh" in err[0]


@pytest.mark.parametrize(
    ("provision", "extra", "expected"),
    [
        (
            {"enabled": True},
            {"storage": {"uri": "s3://b/p"}},
            "provision.setup = 'image' needs provision.image",
        ),
        (
            {**ENABLED, "pip_requirement": "stratos"},
            {"storage": {"uri": "s3://b/p"}},
            "not a pinned requirement",
        ),
        (ENABLED, {}, "cannot read the local artifact store"),
        ({**ENABLED, "prefect_api_url": "ftp://x/api"}, {}, "is not an http(s) URL"),
        (
            ENABLED,
            {"storage": {"uri": "s3://b/p"}, "serve": {"enabled": True}},
            "provision.down = true tears",
        ),
        ({**ENABLED, "idle_minutes_to_autostop": 0}, {}, "provision.idle_minutes_to_autostop"),
    ],
)
def test_bad_provision_settings_name_field_value_and_fix(provision, extra, expected):
    data = {"serve": {"enabled": False}, **extra, "provision": provision}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert expected in str(err.value)


def test_clusters_and_down_on_an_empty_registry(capsys):
    assert main(["clusters"]) == 0
    assert "no clusters recorded" in capsys.readouterr().out
    assert main(["down", "nothing-here"]) == 2
    assert "no cluster or run named 'nothing-here'" in capsys.readouterr().err
