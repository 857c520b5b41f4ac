"""deployments/deploy.py against a real Prefect server: the UI form, and a cron schedule that really runs.

The server's scheduler loop is shortened to 2 s; the schedule fires every
minute, so the test waits at most a minute for the first scheduled run, which a
real process worker then runs to completion on the tiny spec (issue 6). A
second run of the same spec is then served from the cache: `redistill` on an
unchanged spec costs a cache check.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_live import LivePrefect, flow_runs, live_prefect, recorded_teacher, task_states, tiny_spec

from deployments.deploy import deploy, spec_parameters
from stratos.spec import DistillSpec

POOL = "stratos-test"


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrefect]:
    root = tmp_path_factory.mktemp("deployments")
    with (
        pytest.MonkeyPatch.context() as mp,
        live_prefect(root / "prefect", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2") as live,
    ):
        mp.setenv("STRATOS_HOME", str(root / "stratos"))
        live.env["STRATOS_HOME"] = str(root / "stratos")
        yield live


@pytest.fixture(scope="module")
def deployed(prefect: LivePrefect, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("spec")
    spec = tiny_spec(recorded_teacher(folder / "recorded.jsonl"))
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec))
    return deploy(folder / "tiny.yaml", pool=POOL, cron="* * * * *")


def _read(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_distill_deployment_shows_the_spec_as_its_form(deployed: list[str]) -> None:
    assert deployed == ["distill/distill", "distill/redistill"]
    manual = _read("distill/distill")
    assert manual.schedules == [] and manual.work_pool_name == POOL
    schema = manual.parameter_openapi_schema
    assert schema["required"] == ["spec"]
    form = schema["definitions"]["DistillSpec"]["properties"]
    assert set(DistillSpec.model_fields) <= set(form)  # every spec section is a field of the UI form
    assert all(form[f].get("description") for f in DistillSpec.model_fields)
    assert manual.parameters["spec"]["name"] == "tiny"  # pre-filled with the saved spec
    assert manual.parameters["spec"]["students"] == [{"name": "nano", "model": "zoo:nano"}]
    spec_file = Path(manual.parameters["spec"]["teachers"][0]["model"]).with_name("tiny.yaml")
    assert deploy(spec_file, pool=POOL, cron="* * * * *") == deployed  # registering again updates in place
    assert _read("distill/distill").id == manual.id


def test_cron_schedule_runs_the_saved_spec_and_reruns_hit_the_cache(
    prefect: LivePrefect, deployed: list[str]
) -> None:
    scheduled = _read("distill/redistill")
    assert [s.schedule.cron for s in scheduled.schedules] == ["* * * * *"]
    assert scheduled.parameters == _read("distill/distill").parameters
    prefect.start_worker(POOL)

    deadline = time.monotonic() + 180  # up to a minute to the next firing, then the run itself
    while time.monotonic() < deadline:
        runs = flow_runs(deployment_name="distill/redistill")
        done = [r for r in runs if r.state and r.state.is_final()]
        if done:
            break
        time.sleep(2)
    assert runs, "the scheduler created no run for distill/redistill"
    assert done, f"no scheduled run finished in time: {[(r.name, r.state_name) for r in runs]}"
    run = done[0]
    assert run.auto_scheduled and run.state_name == "Completed", (run.state_name, run.state.message)
    reports = list((Path(prefect.env["STRATOS_HOME"]) / "artifacts" / "reports").glob("*/report.md"))
    assert reports and "Stratos run `tiny`" in reports[0].read_text()

    # The next run of the saved spec (here on demand, same parameters) is served from the cache.
    again = run_deployment("distill/distill", timeout=180)
    assert again.state_name == "Completed", again.state.message
    states = task_states(again.id)
    assert {name for name, state in states.items() if state != "Cached"} == {"resolve-models"}, states


def test_deploy_refuses_without_a_server_and_names_the_fix(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(recorded_teacher(tmp_path / "recorded.jsonl"))))
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(ValueError, match="PREFECT_API_URL"),
    ):
        deploy(spec)
    with pytest.raises(ValueError, match="--cron 'every day'"):
        deploy(spec, cron="every day")


def test_saved_spec_keeps_what_the_file_sets_with_absolute_paths(tmp_path: Path) -> None:
    """The worker runs from the checkout, not the spec's folder: relative paths must not survive."""
    (tmp_path / "recorded.jsonl").write_text("")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(Path("recorded.jsonl"))))
    saved = spec_parameters(tmp_path / "tiny.yaml")["spec"]
    assert saved["teachers"][0]["model"] == str(tmp_path / "recorded.jsonl")
    assert "relax" not in saved and "temperature" not in saved["strategy"]  # defaults stay the code's
