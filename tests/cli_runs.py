"""`stratos run` as a user starts it (a subprocess, its own temporary Prefect server) and a counting teacher.

`CountingTeacher` is an OpenAI-compatible HTTP server on loopback (stdlib ThreadingHTTPServer)
that answers arithmetic questions with the domain's own worked solution and records every
question it is asked, so a test can count what one run, a resumed run or two concurrent runs
paid for. `CliRun` starts `stratos run` in a session of its own, collects its stderr line by
line with arrival times, and can snapshot its process tree (by pid) to check nothing survives it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import yaml

from stratos.domains.arithmetic import solve
from stratos.domains.base import completion_text

REPO = Path(__file__).resolve().parents[1]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the point of these tests) is not an error worth a traceback."""


class CountingTeacher:
    """An OpenAI-compatible teacher that solves sums exactly and counts what it is asked."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.asked: list[str] = []  # one question per chat completion request, in arrival order
        self._lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: the test reads counts, not access logs
                pass

            def do_GET(self) -> None:
                self._reply({"object": "list", "data": [{"id": "sums", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"].splitlines()[0].strip()
                with teacher._lock:
                    teacher.asked.append(question)
                time.sleep(teacher.delay_s)
                answer, rationale = solve(question)
                text = completion_text(rationale, str(answer))
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    for i in range(int(body.get("n", 1)))
                ]
                usage = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
                self._reply({"id": "x", "object": "chat.completion", "choices": choices, "usage": usage})

            def _reply(self, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingTeacher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self._lock:
            return len(self.asked)

    def since(self, start: int) -> list[str]:
        with self._lock:
            return self.asked[start:]


def sums_spec(teacher_url: str, train_size: int = 160, **sections: Any) -> dict[str, Any]:
    """Two-digit sums taught by the counting teacher to a zoo nano student; serving off."""
    spec: dict[str, Any] = {
        "name": "sums",
        "task": {"domain": "arithmetic", "train_size": train_size, "probe_size": 16, "test_size": 24},
        "constraints": {"region": "us-east", "budget_usd": 200, "max_latency_ms": 200},
        "teachers": [{"name": "counting", "kind": "openai", "model": "sums", "base_url": teacher_url}],
        "students": [{"name": "nano", "model": "zoo:nano"}],
        "strategy": {"num_samples": 1, "max_new_tokens": 48, "prescreen_size": 8, "prescreen_demos": 1},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 3e-3},
        "serve": {"enabled": False},
    }
    return {**spec, **sections}


@dataclass
class CliRun:
    """One `stratos run` subprocess in its own session, its stderr collected as (seconds, line)."""

    proc: subprocess.Popen
    home: Path
    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, spec: dict[str, Any], home: Path, *args: str, **env: str) -> CliRun:
        home.mkdir(parents=True, exist_ok=True)
        spec_path = home / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        environment = {
            **os.environ,
            "STRATOS_HOME": str(home / "stratos"),
            "PREFECT_HOME": str(home / "prefect"),
            "OMP_NUM_THREADS": "1",
            **env,
        }
        environment.pop("PREFECT_API_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "stratos.cli", "run", str(spec_path), *args],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # like a terminal's job: signals in the test reach only what they name
        )
        run = cls(proc, home)
        threading.Thread(target=run._read, args=(proc.stderr, run.lines, run.started), daemon=True).start()
        threading.Thread(target=run._read, args=(proc.stdout, run.stdout, None), daemon=True).start()
        return run

    @staticmethod
    def _read(stream, into: list, started: float | None) -> None:
        for line in stream:
            into.append((time.monotonic() - started, line.rstrip("\n")) if started is not None else line)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc.poll() is None, (
                f"stratos run exited ({self.proc.returncode}) before {what}:\n{self.tail()}"
            )
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s:\n{self.tail()}"
            time.sleep(0.05)

    def tree(self) -> list[psutil.Process]:
        """This run's process and every descendant, as they are now."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def finish(self, timeout_s: float = 600) -> int:
        code = self.proc.wait(timeout=timeout_s)
        time.sleep(0.2)  # the reader threads drain the pipes
        return code

    def kill(self) -> None:
        """Whatever is left of this run, when a test fails half-way."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def now(self) -> float:
        """Seconds since the start, on the clock the stderr lines are stamped with."""
        return time.monotonic() - self.started

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def result(self) -> dict[str, Any]:
        """The DistillResult printed by --json (the last stdout line)."""
        return json.loads(self.stdout[-1])


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (zombies and recycled pids count as gone)."""
    living = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except psutil.Error:
            continue
    return living


def flow_run_states(prefect_home: Path, flow: str = "distill") -> list[tuple[str, str]]:
    """(flow run name, state type) of a flow's runs, read from the Prefect database itself."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute(
            "SELECT flow_run.name, flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id "
            "WHERE flow.name = ? ORDER BY flow_run.created",
            (flow,),
        ).fetchall()


def attempts_ids(stratos_home: Path) -> set[str]:
    """Question ids in the synthesis attempts log: the questions whose answers a run has kept."""
    ids = set()
    for log in (stratos_home / "work" / "synthesize").glob("*/attempts.jsonl"):
        for line in log.read_text().splitlines():
            try:
                ids.add(json.loads(line)["question_id"])
            except (ValueError, KeyError):
                continue  # a line cut off by the kill
    return ids
