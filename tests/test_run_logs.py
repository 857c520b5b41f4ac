"""What a person sees in the Prefect UI while a run works: progress in the run logs, progress bars, tables.

One tiny run on the embedded default, then its logs and artifacts read back through Prefect's API.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from prefect_live import recorded_teacher, run_logs, tiny_spec

from flows.distill import distill
from stratos.spec import parse_spec

pytestmark = pytest.mark.integration  # a real flow run on the embedded Prefect server


def test_progress_and_decisions_reach_the_run_page(tmp_path: Path):
    spec = tiny_spec(recorded_teacher(tmp_path / "recorded.jsonl"), name="ui-logs")
    state = distill(parse_spec(spec), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    APILogWorker.drain_all(timeout=10)  # run logs are sent in batches, in the background
    text = "\n".join(run_logs(run_id))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    # The stage lines, and Stratos' own progress lines from inside the task runs (extra loggers).
    assert "[7/11] synthesizing" in text and "[8/11] training" in text
    assert "synthesis (alignment): 48/48" in text and "step " in text and " loss " in text
    assert "evaluation of" in text and "ledger:" in text
    kinds = {(a.key, a.type) for a in artifacts}
    assert {("training-progress", "progress"), ("synthesis-progress", "progress")} <= kinds
    # Throttled to one update per 15 s, the bars still end full: the last step always reports.
    assert {a.data for a in artifacts if a.type == "progress"} == {100.0}
    assert {
        ("pareto-front-table", "table"),
        ("teacher-probe", "table"),
        ("student-prescreen", "table"),
    } <= kinds
    assert ("cost-ledger", "table") in kinds and ("distill-report", "markdown") in kinds
    # Figures for people in the report, full precision in its JSON.
    result = state.result()
    training = result.metrics["training"]
    assert f"loss {training['loss_first']:.3f} -> {training['loss_last']:.3f}." in result.report_markdown
    assert training["loss_first"] != round(training["loss_first"], 3)
