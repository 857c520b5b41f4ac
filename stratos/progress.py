"""Progress of long work for the person watching: log lines with an ETA, and a Prefect progress artifact.

Synthesis, evaluation, training and zoo builds can take minutes to hours. Each reports through
its module's logger at most every `every_s` seconds (and when it finishes); Stratos' loggers are
Prefect "extra loggers" (stratos/__init__.py), so inside a flow or task run those lines also reach
the run's logs in the UI. Inside a run the same figure updates a progress artifact, which the UI
shows as a bar on the run page. Outside a run (tests, benchmarks) only the log lines remain.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext

RUN_LOGGERS = ("stratos", "tasks", "flows")  # Stratos' own loggers, shown in the run logs at INFO


def show_progress_in_runs() -> None:
    """Stratos' progress loggers at INFO (unless set otherwise), so their lines reach the run logs."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class StageProgress:
    """A count of `total` things done, reported as a log line and a progress artifact now and then."""

    def __init__(
        self, what: str, total: int, key: str, log: logging.Logger, every_s: float = 15.0, done: int = 0
    ):
        self.what, self.total, self.key, self.log, self.every_s = what, max(total, 1), key, log, every_s
        self.start_done, self.done = done, done
        self.started = self.last = time.perf_counter()
        self.artifact: UUID | None = None
        self.shown = self.started  # when the artifact was last set

    def update(self, done: int, detail: str = "", final: bool = False) -> None:
        """Record `done`; report when `every_s` has passed since the last report, or at the end."""
        self.done = done
        now = time.perf_counter()
        if not final and now - self.last < self.every_s:
            return
        self.last, elapsed, new = now, now - self.started, done - self.start_done
        eta = elapsed / new * (self.total - done) if new else float("nan")
        self.log.info(
            f"{self.what}: {done}/{self.total}{', ' + detail if detail else ''}, elapsed {elapsed:.0f}s eta {eta:.0f}s"
        )
        self.show(100.0 * done / self.total, force=True)  # already throttled by every_s above

    def show(self, percent: float, force: bool = False) -> None:
        """Set the run's progress artifact to `percent` (nothing outside a flow or task run).

        At most once per `every_s` unless `force`: each update is a request to the Prefect API,
        made from the loop doing the work."""
        if not (FlowRunContext.get() or TaskRunContext.get()):
            return
        now = time.perf_counter()
        if self.artifact is not None and not force and now - self.shown < self.every_s:
            return
        self.shown = now
        try:
            if self.artifact is None:
                self.artifact = create_progress_artifact(percent, key=self.key, description=self.what)
            else:
                update_progress_artifact(self.artifact, percent)
        except Exception as err:  # progress is nice to have; never fail the work over it
            self.log.debug("progress artifact %s not updated: %s", self.key, err)
