"""When a dispatched stage's worker counts as lost: no heartbeat and no log line from its run.

The live-server tests (tests/test_workers.py, -m e2e) kill a real worker; these drive the rule
itself with the clock and the API answers scripted, including the case they cannot stage on
demand: heartbeats that stall on a loaded machine while the run keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from flows import dispatch
from stratos.jobs import WorkerLost
from stratos.spec import WorkerSettings

SETTINGS = WorkerSettings(heartbeat_timeout_s=8)
T0 = datetime(2026, 12, 2, tzinfo=UTC)
RUN = uuid4()


@dataclass
class Script:
    """Per poll (1 s apart): is a worker heartbeating, does the run ship a log line, is it done."""

    heartbeats: list[bool]
    logs: list[bool]
    done_at: int | None = None
    now: float = 0.0
    polls: int = 0
    log_times: list[datetime] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    # the sync client's calls that watch() makes
    def read_flow_run(self, _id: Any) -> Any:
        kind = "COMPLETED" if self.done_at is not None and self.polls >= self.done_at else "RUNNING"
        return SimpleNamespace(state=SimpleNamespace(type=SimpleNamespace(value=kind)))

    def read_logs(self, log_filter: Any, limit: int, sort: Any) -> list[Any]:
        if self.polls < len(self.logs) and self.logs[self.polls]:
            self.log_times.append(T0 + timedelta(seconds=self.polls))
        after = log_filter.timestamp.after_
        newer = [t for t in self.log_times if after is None or t >= after]
        return [SimpleNamespace(timestamp=max(newer))] if newer else []

    def set_flow_run_state(self, _id: Any, state: Any, force: bool) -> None:
        self.crashed.append(state.message)

    def live(self, _pool: str, _timeout: float) -> int:
        beat = self.heartbeats[min(self.polls, len(self.heartbeats) - 1)]
        return int(beat)

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.polls += 1

    def __enter__(self) -> Script:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def scripted(monkeypatch):
    def install(script: Script) -> Script:
        monkeypatch.setattr(dispatch, "get_client", lambda sync_client: script)
        monkeypatch.setattr(dispatch, "live_workers", script.live)
        # the dispatcher's clock only: the time module itself stays real for every other thread
        monkeypatch.setattr(
            dispatch, "time", SimpleNamespace(sleep=script.sleep, monotonic=lambda: script.now)
        )
        return script

    return install


def test_silent_worker_and_silent_run_is_lost_after_the_timeout(scripted):
    script = scripted(Script(heartbeats=[True] * 3 + [False] * 60, logs=[True] * 3 + [False] * 60))
    with pytest.raises(WorkerLost, match="no heartbeat and no log line from the run for 8s"):
        dispatch.watch(RUN, "gpu", SETTINGS)
    assert script.crashed and 8 < script.now - 2 <= 10  # last log at poll 2; lost ~8 s later


def test_stalled_heartbeats_while_the_run_logs_are_not_a_lost_worker(scripted):
    # Heartbeats stop for 40 s (a loaded machine, a busy API database) but the run logs every 3 s.
    logs = [i % 3 == 0 for i in range(60)]
    script = scripted(Script(heartbeats=[True] * 5 + [False] * 40 + [True] * 15, logs=logs, done_at=55))
    assert dispatch.watch(RUN, "gpu", SETTINGS).type.value == "COMPLETED"
    assert script.crashed == []


def test_a_run_starting_quietly_on_a_heartbeating_worker_is_not_lost(scripted):
    # 30 s without a log line (imports, model loading) on a worker that heartbeats throughout.
    script = scripted(Script(heartbeats=[True] * 40, logs=[False] * 30 + [True] * 10, done_at=35))
    assert dispatch.watch(RUN, "gpu", SETTINGS).type.value == "COMPLETED"
    assert script.crashed == []
