"""The flow's first step: the same preflight `stratos run` does, for runs that start elsewhere.

A run from the Prefect UI, a schedule or `run_deployment` never passed the CLI's checks. Its first
step runs them (stratos/preflight.py, then what provisioning needs) and, on a bad input or a
service that does not answer, ends the run Failed with the one-line message: no stage runs and
no traceback lands in the run's logs. `run_flow` has already checked its spec and says so with
`preflight_done()`, so a run from the CLI or Python is not checked twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import FailedRun
from prefect.states import Failed, State
from pydantic import ValidationError

from flows.provision import check_provision
from stratos.errors import ServiceError
from stratos.preflight import preflight
from stratos.spec import DistillSpec, SpecError, parse_spec

_CHECKED: ContextVar[bool] = ContextVar("stratos_preflight_done", default=False)


@contextmanager
def preflight_done() -> Iterator[None]:
    """Within this block the flow skips its first-step check: the caller ran preflight itself."""
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def first_check(spec: DistillSpec | dict[str, Any]) -> DistillSpec | State:
    """The run's spec, checked; else the Failed state that ends the run, with the one-line reason.

    A deployment run's spec arrives as the form's JSON (the flow does not let Prefect validate it:
    Prefect's own message spans lines and comes before the first step), so it is parsed here.
    """
    try:
        spec = spec if isinstance(spec, DistillSpec) else parse_spec(spec)
        check_provision(spec)  # no SkyPilot venv or a Prefect URL a launched worker cannot reach
    except ValueError as err:  # a provision setting no server choice can fix
        return fail(str(err))
    try:
        notes = [] if _CHECKED.get() else preflight(spec)
    except (SpecError, ServiceError) as err:
        return fail(str(err))
    for note in notes:
        get_run_logger().warning(note)
    return spec


def fail(reason: str) -> State:
    """The Failed state that ends a run, its reason logged as one line (no traceback)."""
    quiet_engine_failures()
    message = " ".join(reason.split())  # one line, whatever the error's own layout
    get_run_logger().error(message)
    return Failed(message=message)


def one_line(err: ValidationError) -> str:
    """A pydantic error of a small model (a flow parameter) as one line: field: problem; ..."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())


class _NoEngineTraceback(logging.Filter):
    """A deployment run's engine re-raises the run's own Failed state as FailedRun and logs it with a
    traceback of Prefect's frames: for a run that said why it failed, that adds only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FailedRun):
            record.msg, record.args = f"run failed: {record.exc_info[1]}", ()
            record.exc_info, record.exc_text = None, None
        return True


_ENGINE_FILTER = _NoEngineTraceback()


def quiet_engine_failures() -> None:
    """Install the filter on the engine's run logger (once)."""
    logging.getLogger("prefect.flow_runs").addFilter(_ENGINE_FILTER)
