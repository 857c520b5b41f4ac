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
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.schema_tools.validation import build_error_obj, validate
from prefect_live import (
    LivePrefect,
    flow_runs,
    live_prefect,
    recorded_teacher,
    run_logs,
    task_states,
    tiny_spec,
    wait_final,
)

from deployments.deploy import deploy, form_schema, spec_parameters
from stratos.spec import DistillSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.integration
def test_distill_deployment_shows_the_spec_as_its_form(deployed: list[str]) -> None:
    assert deployed == ["distill/distill", "distill/redistill", "distill-saved/saved"]
    manual = _read("distill/distill")
    assert manual.schedules == [] and manual.work_pool_name == POOL
    schema = manual.parameter_openapi_schema
    # Nothing required at the top: the deployment carries the saved spec, so Quick run starts at once
    # (both Prefect UIs open the form instead when the top-level `required` is non-empty).
    assert schema["required"] == [] and schema["type"] == "object"
    run_spec = schema["definitions"]["RunSpec"]
    assert run_spec["required"] == ["task", "teachers", "students"]  # what a run needs is marked required
    form = run_spec["properties"]
    assert set(DistillSpec.model_fields) <= set(form)  # every spec section is a field of the UI form
    assert all(form[f].get("description") and form[f].get("title") for f in DistillSpec.model_fields)
    catalogs = schema["definitions"]["ServerSettings"]["properties"]["catalogs"]
    assert catalogs["default"] == ["builtin"]  # the effective default shows, not "No items"
    assert manual.parameters["spec"]["name"] == "tiny"  # pre-filled with the saved spec
    assert manual.parameters["spec"]["students"] == [{"name": "nano", "model": "zoo:nano"}]
    spec_file = Path(manual.parameters["spec"]["teachers"][0]["model"]).with_name("tiny.yaml")
    assert deploy(spec_file, pool=POOL, cron="* * * * *") == deployed  # registering again updates in place
    assert _read("distill/distill").id == manual.id


@pytest.mark.integration
@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
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

    # The next run of the saved spec is served from the cache. No parameters are passed, as with the
    # UI's Quick run: the server fills in the saved spec.
    again = run_deployment("distill/distill", timeout=180)
    assert again.state_name == "Completed", again.state.message
    assert again.parameters["spec"]["name"] == "tiny"
    states = task_states(again.id)
    assert {name for name, state in states.items() if state != "Cached"} == {"build-models"}, states

    # The short form: the saved spec by path, one field changed; the work is the same, so it is cached too.
    saved = run_deployment(
        "distill-saved/saved", parameters={"overrides": {"name": "tiny-saved"}}, timeout=180
    )
    assert saved.state_name == "Completed", saved.state.message
    reports = [
        p.read_text()
        for p in (Path(prefect.env["STRATOS_HOME"]) / "artifacts" / "reports").glob("*/report.md")
    ]
    assert any("Stratos run `tiny-saved`" in r for r in reports)


@pytest.mark.integration
def test_a_bad_run_from_the_form_fails_at_its_first_step_in_one_line(
    prefect: LivePrefect, deployed: list[str]
) -> None:
    """What the UI form accepts but a run cannot use fails before any stage: one line, no traceback."""
    if not any(w.pool == POOL and w.proc.poll() is None for w in prefect.workers):
        prefect.start_worker(POOL)
    saved = _read("distill/distill").parameters["spec"]
    missing = str(Path(saved["teachers"][0]["model"]).with_name("gone.jsonl"))
    cases = [
        ("distill/distill", {"spec": {**saved, "task": {"domain": "custom"}}}, "task.dataset"),
        (
            "distill/distill",
            {"spec": {**saved, "teachers": [{**saved["teachers"][0], "model": missing}]}},
            "gone.jsonl",
        ),
        ("distill-saved/saved", {"spec_path": "/nowhere/spec.yaml"}, "/nowhere/spec.yaml"),
    ]
    # submitted together: the worker runs them side by side, as it would a user's runs
    submitted = [(run_deployment(name, parameters=p, timeout=0), name, named) for name, p, named in cases]
    for started, name, named in submitted:
        run = wait_final(started.id, timeout_s=180)
        assert run.state_name == "Failed", (name, run.state_name, run.state.message)
        assert named in run.state.message and "\n" not in run.state.message, run.state.message
        assert not task_states(run.id), "a stage ran before the inputs were checked"
        assert (run.end_time - run.start_time).total_seconds() < 5  # the first step, not ~20 s in
        deadline = time.monotonic() + 20  # the run's process sends its last logs as it exits
        logs = run_logs(run.id)
        while not any(named in line for line in logs):
            assert time.monotonic() < deadline, logs
            time.sleep(0.5)
            logs = run_logs(run.id)
        assert not [line for line in logs if "Traceback" in line], [
            line for line in logs if "Traceback" in line
        ]


def test_schedule_takes_the_time_zone_and_a_bad_one_registers_nothing(deployed: list[str]) -> None:
    spec_file = Path(_read("distill/distill").parameters["spec"]["teachers"][0]["model"]).with_name(
        "tiny.yaml"
    )
    before = _read("distill/distill").updated
    with pytest.raises(ValueError, match="--timezone 'Mars/Olympus'"):
        deploy(spec_file, pool=POOL, cron="30 2 * * 1", name="weekly", timezone="Mars/Olympus")
    assert _read("distill/distill").updated == before  # validated before anything was registered
    with pytest.raises(ObjectNotFound):
        _read("distill/weekly")

    names = deploy(spec_file, pool=POOL, cron="30 2 * * 1", name="weekly", timezone="Europe/Berlin")
    assert names == ["distill/distill", "distill/weekly", "distill-saved/saved"]
    (schedule,) = [s.schedule for s in _read("distill/weekly").schedules]
    assert (schedule.cron, schedule.timezone) == ("30 2 * * 1", "Europe/Berlin")


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
    with pytest.raises(ValueError, match="--timezone 'Berlin'.*Europe/Berlin"):
        deploy(spec, timezone="Berlin")


def test_saved_spec_keeps_what_the_file_sets_with_absolute_paths(tmp_path: Path) -> None:
    """The worker runs from the checkout, not the spec's folder: relative paths must not survive."""
    (tmp_path / "recorded.jsonl").write_text("")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(Path("recorded.jsonl"))))
    saved = spec_parameters(tmp_path / "tiny.yaml")["spec"]
    assert saved["teachers"][0]["model"] == str(tmp_path / "recorded.jsonl")
    assert "relax" not in saved and "temperature" not in saved["strategy"]  # defaults stay the code's


def test_the_form_names_the_field_a_bad_value_is_in() -> None:
    """The UI validates the form against the deployment's schema: a bad number inside a section is
    reported at its field, not as the whole section's dict (the flow's own schema, with `task`
    optional, said "{...} is not valid under any of the given schemas")."""
    spec = load_spec(ROOT / "examples" / "arithmetic-strong-teacher.yaml").model_dump(mode="json")
    spec["task"]["train_size"] = -5
    errors = validate(
        {"spec": spec},
        form_schema().model_dump_for_openapi(),
        raise_on_error=False,
        preprocess=True,
        ignore_required=True,
        allow_none_with_default=True,
    )
    report = build_error_obj(errors)
    (task,) = report["errors"][0]["errors"]
    assert task == {
        "property": "task",
        "errors": [{"property": "train_size", "errors": ["-5 is less than or equal to the minimum of 0"]}],
    }
