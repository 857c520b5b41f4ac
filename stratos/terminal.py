"""What the `stratos` command shows when things go wrong: one line, an exit code, no traceback.

Every failure class Stratos knows maps to one line on stderr and a documented exit code
(EXIT_CODES); anything else prints one line plus the file under $STRATOS_HOME/logs/ that holds
the full traceback. During a run, the terminal's log handlers (Prefect's console, Stratos'
own) lose their tracebacks, which go to the run's log file with everything else.

Ctrl-C: the first stops the run cleanly (the flow run is marked crashed, the processes the run
started are stopped, the command exits 130 with one line); a second, or a clean stop that takes
longer than GRACE_S, exits 130 at once.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from stratos.backends.stored import UnknownPromptError
from stratos.errors import ServiceError
from stratos.serving.endpoints import EndpointNotFoundError
from stratos.spec import SpecError
from stratos.storage import StorageError, stratos_home

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    the run failed unexpectedly: one line here, the full traceback under $STRATOS_HOME/logs/
  {EXIT_BAD_INPUT}    bad input: spec, dataset, catalog, model path, credentials, directories (the message
       names the field, the value and the fix)
  {EXIT_INFEASIBLE}    infeasible: no server, teacher or student meets the constraints, even relaxed; or
       the budget ran out before the job was done (what was made is kept: re-run with more to resume)
  {EXIT_SERVICE}    a service the run needs failed or does not answer: a teacher endpoint, the
       artifact store (S3), a worker, the Prefect server
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); run the same command again to resume"""
GRACE_S = 8.0  # a clean stop after Ctrl-C that takes longer than this is cut short (exit within 10 s)
INTERRUPTED = (
    "interrupted (Ctrl-C): the run stopped and its flow run is marked crashed; run the same command "
    "again to resume where it stopped"
)


def classify(exc: BaseException) -> tuple[int, str | None]:
    """(exit code, the one line to print) for a known failure; (EXIT_FAILED, None) for anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, INTERRUPTED
    if isinstance(exc, SpecError | EndpointNotFoundError | UnknownPromptError):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, ServiceError):
        return EXIT_SERVICE, str(exc)
    if isinstance(exc, httpx.TransportError):  # Prefect's client: the API went away mid-run
        url = os.environ.get("PREFECT_API_URL", "the Prefect API")
        return (
            EXIT_SERVICE,
            f"{url} stopped answering ({type(exc).__name__}); the run is resumable once it is back",
        )
    if isinstance(exc, StorageError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, ValueError | FileNotFoundError):  # stages raise these for inputs found bad late
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return (
            EXIT_BAD_INPUT,
            f"cannot use '{exc.filename}': {exc.strerror}; check the path and its permissions",
        )
    return EXIT_FAILED, None


def report_failure(exc: BaseException, run_log: Path | None = None) -> int:
    """Print the failure's one line (plus where its traceback went, when unexpected); its exit code."""
    code, line = classify(exc)
    if line is None:
        path = write_traceback(exc, run_log)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        line = f"unexpected {type(exc).__name__}: {first}; the full traceback is in {path}"
    elif run_log is not None and run_log.is_file() and code != EXIT_INTERRUPTED:
        line += f" (run log: {run_log})"
    print(f"error: {line}" if code != EXIT_INTERRUPTED else line, file=sys.stderr)
    return code


def write_traceback(exc: BaseException, path: Path | None = None) -> Path:
    """Append the exception's traceback to `path` (default: a new file under $STRATOS_HOME/logs/)."""
    path = path or log_path("stratos")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write("".join(traceback.format_exception(exc)))
    except OSError:  # STRATOS_HOME itself may be the problem: fall back to the temporary directory
        path = Path(os.environ.get("TMPDIR", "/tmp")) / path.name
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return path


def log_path(kind: str) -> Path:
    return stratos_home() / "logs" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


# --- the terminal during a run ---------------------------------------------------------------------


class _LazyFileHandler(logging.FileHandler):
    """A log file created on the first record: a run stopped by the preflight leaves no file."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _NoTraceback(logging.Formatter):
    """Formats a record as the wrapped formatter would, without its traceback (that goes to the log file)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = copy.copy(record)
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


def terminal_handlers() -> list[logging.Handler]:
    """Every handler that writes to the terminal (Prefect's console handler, stream handlers on stderr/out)."""
    found: list[logging.Handler] = []
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            console = type(handler).__name__ == "PrefectConsoleHandler"
            if (console or stream in (sys.stderr, sys.stdout)) and handler not in found:
                found.append(handler)
    return found


def run_logging(path: Path) -> None:
    """Terminal handlers without tracebacks; everything (tracebacks included) to `path`, created lazily."""
    for handler in terminal_handlers():
        if not isinstance(handler.formatter, _NoTraceback):
            handler.setFormatter(_NoTraceback(handler.formatter))
    file = _LazyFileHandler(path, delay=True, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s | %(message)s"))
    file.setLevel(logging.INFO)
    logging.getLogger().addHandler(file)
    prefect = logging.getLogger("prefect")
    if not prefect.propagate:
        prefect.addHandler(file)


def silence_terminal() -> None:
    """No more log lines on the terminal (after Ctrl-C the one line to see is the last)."""
    for handler in terminal_handlers():
        handler.setLevel(logging.CRITICAL + 1)


@contextmanager
def interruptible(stop_children: Callable[[], object]) -> Iterator[None]:
    """The Ctrl-C behaviour of the module docstring for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[threading.Timer] = []

    def exit_now() -> None:
        with suppress(Exception):  # whatever fails here, the process must still exit
            stop_children()
        print(INTERRUPTED, file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    def on_sigint(signum, frame) -> None:
        if pressed:
            exit_now()
        silence_terminal()
        timer = threading.Timer(GRACE_S, exit_now)
        timer.daemon = True
        timer.start()
        pressed.append(timer)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for timer in pressed:
            timer.cancel()
