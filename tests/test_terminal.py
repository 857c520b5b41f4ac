"""What the terminal shows when something fails: one line, a documented exit code, tracebacks in a file."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stratos.backends.openai_http import BackendError
from stratos.cli import main, run_exit_code
from stratos.errors import Unreachable
from stratos.jobs import WorkerLost
from stratos.spec import SpecError
from stratos.storage import StorageError, StoreUnreachable
from stratos.terminal import EXIT_CODES, INTERRUPTED, _NoTraceback, classify, report_failure, run_logging

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "exc, code",
    [
        (SpecError("spec field 'x' = 1: bad; fix it"), 2),
        (ValueError("task.dataset 'f', line 8: 'answer' is empty"), 2),
        (FileNotFoundError(2, "No such file or directory", "/nope"), 2),
        (PermissionError(13, "Permission denied", "/root/x"), 2),
        (Unreachable("the endpoint does not answer"), 4),
        (StoreUnreachable("S3 does not answer"), 4),
        (BackendError("http://x/v1 failed 5 times"), 4),
        (WorkerLost("worker silent"), 4),
        (httpx.ConnectError("refused"), 4),
        (StorageError("'model.safetensors' has sha256 ... (corrupted)"), 1),
        (KeyboardInterrupt(), 130),
        (RuntimeError("boom"), 1),
    ],
)
def test_every_known_failure_has_an_exit_code_and_a_line(exc, code):
    got, line = classify(exc)
    assert got == code
    assert (line is None) == (type(exc) is RuntimeError)


def test_an_unexpected_error_prints_one_line_and_where_its_traceback_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path))
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as exc:
        assert report_failure(exc) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: unexpected RuntimeError: boom; the full traceback is in "
    )
    log = Path(err[0].rsplit(" ", 1)[-1])
    assert log.parent == tmp_path / "logs" and "Traceback (most recent call last)" in log.read_text()


def test_interrupted_is_one_line_exit_130(capsys):
    assert report_failure(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err.strip() == INTERRUPTED


def test_help_documents_the_exit_codes():
    out = subprocess.run(
        [sys.executable, "-m", "stratos.cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    ).stdout
    assert EXIT_CODES in out and "130  interrupted" in out


def test_terminal_loses_tracebacks_the_run_log_keeps_them(tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.stream = sys.stderr  # found as a terminal handler, as basicConfig's is
    logger = logging.getLogger("stratos.test-terminal")
    logging.getLogger().addHandler(handler)
    try:
        run_logging(tmp_path / "run.log")
        assert isinstance(handler.formatter, _NoTraceback)
        handler.stream = stream
        try:
            raise ValueError("inside a stage")
        except ValueError:
            logger.error("stage failed", exc_info=True)
    finally:
        logging.getLogger().removeHandler(handler)
        for h in list(logging.getLogger().handlers):
            if getattr(h, "baseFilename", "") == str(tmp_path / "run.log"):
                logging.getLogger().removeHandler(h)
                h.close()
    assert stream.getvalue() == "ERROR stage failed\n"
    assert "Traceback (most recent call last)" in (tmp_path / "run.log").read_text()


def test_plan_on_an_empty_spec_says_it_plans_on_defaults(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["plan", str(empty)]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"note: '{empty}' sets nothing, so this plans on every default")


@pytest.mark.parametrize(
    ("status", "code"), [("served", 0), ("trained", 0), ("infeasible", 3), ("budget_exhausted", 3)]
)
def test_a_run_the_constraints_stopped_exits_3(status: str, code: int) -> None:
    assert run_exit_code(status) == code
