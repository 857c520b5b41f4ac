"""The Prefect UI as a user drives it: headless Chromium against a real server and worker on loopback.

The module starts `prefect server start` with its UI (the V1 UI, as Stratos
configures it) and a process worker, registers the `distill` deployment with
the tiny spec, and then, in the browser: opens the Custom run form and checks
it reads like the spec (human section titles, task/teachers/students required,
effective defaults shown, essentials first), changes the run name, submits,
waits for Completed and finds the report and the Pareto plot under Artifacts;
starts a Quick run, which must start at once from the saved spec; and resumes
a suspended run through its input form (tests/ui_flows.py), the mechanism the
relaxation approval uses.

Every browser request must stay on loopback (tests/browser.py fails the test
otherwise), and a failing test leaves a screenshot in its tmp dir.

Selectors, found on Prefect 3.8.8's V1 UI:
    deployment page      button "Run" (exact) -> menu items `.p-overflow-menu-item` "Quick run" / "Custom run"
    run form             labels `.schema-form-property__label` ("Title" or "Title (Optional)"); the
                         innermost `.schema-form-property` holding a label holds its control (a
                         `<textarea>` for text, list items too); button "Submit"
    flow run page        tab `li.p-tab#artifacts`; artifact cards by key; button "Resume" when suspended
    resume modal         `.p-modal`: one `.schema-form-property` per input field; an enum is
                         `button.p-select-button__control` (ArrowDown opens it, then role=option),
                         a number an `<input type=number>`; the input model's description is
                         markdown above the fields; button "Submit"; toast "Flow run resumed"
A write the server answers with 503 (SQLite "database is locked" on a busy machine; the UI shows
"Oops. Something went wrong" and does not retry) is clicked again (Browser.until).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import browser, is_loopback
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.deployments.runner import deploy as register
from prefect_live import LivePrefect, flow_runs, live_prefect, recorded_teacher, tiny_spec, wait_final
from ui_flows import approval_demo

from deployments.deploy import deploy

pytestmark = pytest.mark.browser
POOL = "stratos-ui"
TESTS = Path(__file__).resolve().parent
CLASS_NAMES = ("Settings", "Spec", "Policy", "Candidate", "Field (Optional)")  # what the form showed before


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrefect]:
    root = tmp_path_factory.mktemp("ui")
    with (
        pytest.MonkeyPatch.context() as mp,
        live_prefect(root / "prefect", PREFECT_UI_ENABLED="true") as live,
    ):
        mp.setenv("STRATOS_HOME", str(root / "stratos"))
        live.env["STRATOS_HOME"] = str(root / "stratos")
        live.create_pool(POOL)
        # A slower heartbeat than the other live tests: fewer writes to the server's SQLite under the UI.
        live.start_worker(POOL, PREFECT_WORKER_HEARTBEAT_SECONDS="15")
        yield live


@pytest.fixture(scope="module")
def deployment(prefect: LivePrefect, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("spec")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(recorded_teacher(folder / "recorded.jsonl"))))
    deploy(folder / "tiny.yaml", pool=POOL)
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name("distill/distill")


def ui(prefect: LivePrefect) -> str:
    return prefect.api_url.removesuffix("/api")


def new_runs(before: set[Any]) -> set[Any]:
    """The ids of the `distill/distill` runs created since `before` was taken."""
    return {r.id for r in flow_runs(deployment_name="distill/distill")} - before


def paused(run_id: Any) -> bool:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state is not None and state.is_paused()


def artifact(run_id: Any, key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        )
    assert found, f"no artifact '{key}' on run {run_id}"
    return found[0]


def form_field(page: Any, title: str) -> Any:
    """The form field labelled exactly `title` (the innermost of the nested properties that hold it)."""
    return page.locator(".schema-form-property", has=page.get_by_text(title, exact=True)).last


def open_run_menu(page: Any, base: str, deployment_id: Any, item: str) -> None:
    page.goto(f"{base}/deployments/deployment/{deployment_id}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator(".p-overflow-menu-item", has_text=item).click()


def test_custom_run_form_reads_like_the_spec_and_its_run_shows_the_artifacts(
    prefect: LivePrefect, deployment: Any, tmp_path: Path
) -> None:
    base = ui(prefect)
    with browser(tmp_path / "shots") as view:
        page = view.page
        open_run_menu(page, base, deployment.id, "Custom run")
        page.locator(".schema-form-property__label").first.wait_for()
        titles = page.locator(".schema-form-property__label").all_inner_texts()
        assert not [t for t in titles if any(word in t for word in CLASS_NAMES)], titles
        # What a run requires carries no "(Optional)"; the essentials come first, in the spec's order.
        order = ["Task", "Constraints (Optional)", "Teachers", "Students", "Servers (Optional)"]
        assert all(t in titles for t in order), titles
        assert [titles.index(t) for t in order] == sorted(titles.index(t) for t in order), titles
        assert "Budget (USD) (Optional)" in titles and "Max latency (ms) (Optional)" in titles
        catalogs = form_field(page, "Catalogs (Optional)")
        assert catalogs.locator("textarea").first.input_value() == "builtin"  # the default shows
        assert "No items in this list" not in catalogs.inner_text()

        form_field(page, "Name (Optional)").locator("textarea, input").first.fill("tiny-ui")  # run name
        before = {r.id for r in flow_runs(deployment_name="distill/distill")}
        view.until(lambda: page.get_by_role("button", name="Submit").click(), lambda: bool(new_runs(before)))
        page.wait_for_url(re.compile(r"tab=Runs"))  # back on the deployment, at its runs
        (run_id,) = new_runs(before)
        run = wait_final(run_id)
        assert run.state_name == "Completed", run.state.message
        assert run.parameters["spec"]["name"] == "tiny-ui"

        page.goto(f"{base}/runs/flow-run/{run_id}")
        page.get_by_text("Completed", exact=True).first.wait_for()
        page.locator("li.p-tab#artifacts").click()
        page.get_by_text("distill-report", exact=True).wait_for()
        page.get_by_text("pareto-front", exact=True).click()
        plot = page.locator("img[alt='Pareto front']")
        plot.wait_for()
        assert plot.evaluate("img => img.complete && img.naturalWidth > 100")
        page.goto(f"{base}/artifacts/artifact/{artifact(run_id, 'distill-report').id}")
        page.get_by_text("Stratos run", exact=False).first.wait_for()
        assert "tiny-ui" in page.locator("body").inner_text()


def test_quick_run_starts_the_saved_spec_at_once(
    prefect: LivePrefect, deployment: Any, tmp_path: Path
) -> None:
    with browser(tmp_path / "shots") as view:
        page = view.page
        before = {r.id for r in flow_runs(deployment_name="distill/distill")}
        view.until(
            lambda: open_run_menu(page, ui(prefect), deployment.id, "Quick run"),
            lambda: bool(new_runs(before)),
        )
        (run_id,) = new_runs(before)  # created by the click itself
        assert not page.locator(".p-modal").is_visible()  # no parameter dialog in between
    run = wait_final(run_id)
    assert run.state_name == "Completed", run.state.message
    assert run.parameters["spec"]["name"] == "tiny"  # the saved spec, as registered


def test_a_suspended_run_is_resumed_from_its_input_form(prefect: LivePrefect, tmp_path: Path) -> None:
    source = approval_demo.from_source(str(TESTS), "ui_flows.py:approval_demo")
    register(
        source.to_deployment("demo"),
        work_pool_name=POOL,
        build=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    run = wait_final(run_deployment("approval-demo/demo", timeout=0).id, timeout_s=120)
    assert run.state_name == "Suspended", run.state_name

    with browser(tmp_path / "shots") as view:
        page = view.page
        page.goto(f"{ui(prefect)}/runs/flow-run/{run.id}")
        page.get_by_role("button", name="Resume").click()
        modal = page.locator(".p-modal")
        modal.get_by_text("No student passed the pre-screen.").wait_for()  # the input's description
        decision = modal.locator(".schema-form-property", has_text="Decision")
        decision.locator("button.p-select-button__control").press("ArrowDown")
        page.get_by_role("option", name="stop").click()
        budget = modal.locator(".schema-form-property", has_text="Budget (USD)").locator("input")
        modal.get_by_text("The budget to continue with.").wait_for()  # pre-filled, yet still described
        assert budget.input_value() == "300"  # the flow's proposed value pre-fills the form
        budget.fill("450")
        view.until(lambda: modal.get_by_role("button", name="Submit").click(), lambda: not paused(run.id))

    run = wait_final(run.id, timeout_s=120)
    assert run.state_name == "Completed", run.state.message
    assert artifact(run.id, "approval-answer").data == "decision: stop, budget_usd: 450"


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_relaxation_approval_continues_or_stops_from_the_form(prefect: LivePrefect, tmp_path: Path) -> None:
    """No student passes (threshold 1.0): the run suspends before its relax step, the UI approves it."""
    folder = tmp_path / "spec"
    folder.mkdir()
    spec = tiny_spec(
        recorded_teacher(folder / "recorded.jsonl"),
        strategy={"num_samples": 1, "max_new_tokens": 24, "prescreen_size": 8, "prescreen_threshold": 1.0},
        relax={"approval": "ui", "steps": [{"action": "higher_budget", "factor": 2}]},
    )
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec))
    deploy(folder / "tiny.yaml", pool=POOL)
    run = wait_final(run_deployment("distill/distill", timeout=0).id)
    assert run.state_name == "Suspended", run.state_name

    with browser(tmp_path / "shots") as view:
        page = view.page
        page.goto(f"{ui(prefect)}/runs/flow-run/{run.id}")
        page.get_by_role("button", name="Resume").click()
        modal = page.locator(".p-modal")
        modal.get_by_text("pre-screen", exact=False).first.wait_for()  # what failed and why
        modal.get_by_text("higher_budget", exact=False).first.wait_for()  # the proposed step
        decision = modal.locator(".schema-form-property", has_text="Decision")
        decision.locator("button.p-select-button__control").press("ArrowDown")
        page.get_by_role("option", name="stop").click()
        view.until(lambda: modal.get_by_role("button", name="Submit").click(), lambda: not paused(run.id))

    run = wait_final(run.id)
    assert run.state_name == "Completed", run.state.message
    assert "INFEASIBLE" in artifact(run.id, "distill-report").data


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_relaxation_approved_from_the_form_continues_with_the_relaxed_spec(
    prefect: LivePrefect, tmp_path: Path
) -> None:
    """No server under a $0.01/h cap: the run suspends before its relax step; approving it continues the run."""
    folder = tmp_path / "spec"
    folder.mkdir()
    spec = tiny_spec(
        recorded_teacher(folder / "recorded.jsonl"),
        constraints={"region": "us-east", "budget_usd": 200, "max_latency_ms": 200, "max_hourly_usd": 0.01},
        relax={"approval": "ui", "steps": [{"action": "higher_hourly_cap", "factor": 100}]},
    )
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec))
    deploy(folder / "tiny.yaml", pool=POOL)
    run = wait_final(run_deployment("distill/distill", timeout=0).id)
    assert run.state_name == "Suspended", run.state_name

    with browser(tmp_path / "shots") as view:
        page = view.page
        page.goto(f"{ui(prefect)}/runs/flow-run/{run.id}")
        page.get_by_role("button", name="Resume").click()
        modal = page.locator(".p-modal")
        modal.get_by_text("nothing passed at the server selection", exact=False).first.wait_for()
        modal.get_by_text(
            "higher_hourly_cap", exact=False
        ).first.wait_for()  # the proposed step, pre-selected
        view.until(lambda: modal.get_by_role("button", name="Submit").click(), lambda: not paused(run.id))

    run = wait_final(run.id)
    assert run.state_name == "Completed", run.state.message
    report = artifact(run.id, "distill-report").data
    assert "hourly cap $0.01/h -> $1/h" in report and "Student vs teacher" in report


def test_the_browser_fails_a_test_on_an_outside_request(tmp_path: Path) -> None:
    """The guard itself: a page that reaches past loopback fails the test (no server needed)."""
    outside = r"outside this machine: \['https://example\.com/x\.png'\]"
    with pytest.raises(AssertionError, match=outside), browser(tmp_path / "shots") as view:
        view.page.set_content('<img src="https://example.com/x.png"><img src="http://127.0.0.1:9/y.png">')
        view.page.wait_for_load_state("load")
    assert (tmp_path / "shots" / "failure.png").is_file()
    assert is_loopback("http://[::1]:4200/api") and is_loopback("data:image/png;base64,AAAA")
    assert not is_loopback("https://sr-client-cfg.amplitude.com/config") and not is_loopback(
        "http://10.0.0.1/"
    )
