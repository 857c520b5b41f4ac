"""Run a list of bad inputs through the real `stratos` CLI and print what each one gets.

Each case is a subprocess (`python -m stratos.cli ...`) with its own empty STRATOS_HOME and
PREFECT_HOME, so what it leaves behind is visible: files under STRATOS_HOME (logs excepted)
and whether Prefect was started at all (a database under PREFECT_HOME). The table gives, per
case: exit code, seconds, the error line, whether a traceback reached the terminal, how many
stderr lines there were, and what was left behind. The last line of output is the JSON.

    .venv/bin/python scripts/hardening_table.py                      # this checkout
    .venv/bin/python scripts/hardening_table.py --repo /tmp/before   # another checkout, same venv
    .venv/bin/python scripts/hardening_table.py --only epochs-inf --timeout 60

The fixtures (a nano zoo model, a recorded teacher, the datasets) are built once in --work
(default a temporary directory); the zoo model takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")  # the last line of a traceback


@dataclass
class Case:
    name: str
    what: str  # the input, as the issue names it
    spec: Callable[[Fixtures], dict[str, Any] | bytes]  # the spec document (or raw bytes)
    env: Callable[[Fixtures], dict[str, str]] = lambda fx: {}
    command: str = "run"


@dataclass
class Fixtures:
    work: Path
    teacher: Path = field(init=False)  # recorded completions (stored backend)
    nano: Path = field(init=False)  # a zoo nano model directory
    closed_port: int = field(init=False)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.teacher = self.work / "teacher.jsonl"
        self.nano = self.work / "nano"
        self.closed_port = _closed_port()

    def file(self, name: str, data: bytes | str) -> str:
        path = self.work / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def dir(self, name: str) -> str:
        path = self.work / name
        path.mkdir(exist_ok=True)
        return str(path)

    def truncated_copy(self, name: str) -> str:
        """The nano model with its safetensors cut to half its size."""
        dest = self.work / name
        if not dest.exists():
            shutil.copytree(self.nano, dest)
            weights = dest / "model.safetensors"
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
        return str(dest)


def build_fixtures(fx: Fixtures, python: str, repo: Path) -> None:
    """The recorded teacher and a nano model, built through this checkout's own code."""
    if fx.teacher.is_file() and (fx.nano / "config.json").is_file():
        return
    code = f"""
import json, shutil, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from prefect_live import recorded_teacher
from stratos import zoo
from stratos.domains import get_domain
from stratos.spec import TaskSpec
recorded_teacher(__import__("pathlib").Path({str(fx.teacher)!r}))
path = zoo.random_model(get_domain(TaskSpec(domain="arithmetic", options={{"digits": 1}})), "nano")
shutil.copytree(path, {str(fx.nano)!r}, dirs_exist_ok=True)
"""
    env = {**os.environ, "STRATOS_ZOO_DIR": str(fx.work / "zoo"), "PYTHONPATH": str(REPO)}
    subprocess.run([python, "-c", code], check=True, env=env, cwd=REPO, timeout=600)


def base_spec(fx: Fixtures, **sections: Any) -> dict[str, Any]:
    """The tiny runnable spec (1-digit sums, a recorded teacher, zoo nano, serving off)."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "task": {
            "domain": "arithmetic",
            "options": {"digits": 1},
            "train_size": 48,
            "probe_size": 16,
            "test_size": 24,
        },
        "constraints": {"region": "us-east", "budget_usd": 200, "max_latency_ms": 200},
        "teachers": [{"name": "recorded", "kind": "stored", "model": str(fx.teacher)}],
        "students": [{"name": "nano", "model": "zoo:nano"}],
        "strategy": {"num_samples": 1, "max_new_tokens": 24, "prescreen_size": 8, "prescreen_demos": 1},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8},
        "serve": {"enabled": False},
    }
    return {**spec, **sections}


def custom_task(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "domain": "custom",
        "dataset": path,
        "train_size": 100,
        "probe_size": 10,
        "test_size": 20,
        **extra,
    }


def sums(n: int, question: Callable[[int], str] = lambda i: f"What is {i} plus 1?") -> list[dict[str, str]]:
    return [{"question": question(i), "answer": str(i + 1)} for i in range(n)]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


CATALOG_HEADER = "InstanceType,AcceleratorName,AcceleratorCount,Price,Region\n"


def _openai(fx: Fixtures, **extra: Any) -> dict[str, Any]:
    return {
        "name": "api",
        "kind": "openai",
        "model": "m",
        "base_url": f"http://127.0.0.1:{fx.closed_port}/v1",
        **extra,
    }


CASES = [
    Case(
        "truncated-teacher",
        "truncated model.safetensors (teacher)",
        lambda fx: base_spec(fx, teachers=[{"name": "t", "kind": "hf", "model": fx.truncated_copy("cut-t")}]),
    ),
    Case(
        "truncated-student",
        "truncated model.safetensors (student)",
        lambda fx: base_spec(fx, students=[{"name": "s", "model": fx.truncated_copy("cut-s")}]),
    ),
    Case(
        "openai-closed-port",
        "an openai teacher on a closed port",
        lambda fx: base_spec(fx, teachers=[_openai(fx)]),
    ),
    Case(
        "s3-nothing-listening",
        "storage.uri s3://... with nothing listening",
        lambda fx: base_spec(fx, storage={"uri": "s3://bucket/stratos"}),
        lambda fx: {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{fx.closed_port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    ),
    Case(
        "home-unwritable",
        "an unwritable STRATOS_HOME",
        base_spec,
        lambda fx: {"STRATOS_HOME": "/sys/stratos"},
    ),
    Case(
        "home-is-a-file",
        "a non-directory STRATOS_HOME",
        base_spec,
        lambda fx: {"STRATOS_HOME": fx.file("home-file", "not a directory\n")},
    ),
    Case(
        "catalog-is-directory",
        "a catalog path that is a directory",
        lambda fx: base_spec(fx, servers={"catalogs": [fx.dir("catalog-dir")]}),
    ),
    Case(
        "epochs-inf",
        "training.num_train_epochs: .inf",
        lambda fx: base_spec(fx, training={"num_train_epochs": float("inf")}),
    ),
    Case(
        "weights-nan",
        "servers.weights: [.nan, ...]",
        lambda fx: base_spec(fx, servers={"weights": [float("nan"), 0.5, 0.5]}),
    ),
    Case(
        "missing-model-path",
        "a student model path that does not exist",
        lambda fx: base_spec(fx, students=[{"name": "s", "model": "/nonexistent/model"}]),
    ),
    Case(
        "api-key-env-unset",
        "api_key_env names an unset variable",
        lambda fx: base_spec(fx, teachers=[_openai(fx, api_key_env="STRATOS_TABLE_UNSET_KEY")]),
    ),
    Case(
        "probe-size-too-large",
        "task.probe_size larger than the data",
        lambda fx: base_spec(fx, task=custom_task(fx.file("sums.jsonl", jsonl(sums(300))), probe_size=5000)),
    ),
    Case(
        "train-size-1e9",
        "task.train_size: 1000000000",
        lambda fx: base_spec(fx, task={**base_spec(fx)["task"], "train_size": 1_000_000_000}),
    ),
    Case(
        "five-mb-question",
        "one 5 MB question in a 300-row file",
        lambda fx: base_spec(
            fx,
            task=custom_task(
                fx.file(
                    "huge.jsonl", jsonl(sums(300, lambda i: "x" * 5_000_000 if i == 150 else f"{i} + 1?"))
                )
            ),
        ),
    ),
    Case(
        "identical-questions",
        "300 identical questions",
        lambda fx: base_spec(
            fx, task=custom_task(fx.file("same.jsonl", jsonl(sums(300, lambda i: "What is 1 plus 1?"))))
        ),
    ),
    Case(
        "empty-answer-line-8",
        "an empty answer on file line 8 (after blank lines)",
        lambda fx: base_spec(
            fx,
            task=custom_task(
                fx.file(
                    "gap.jsonl",
                    "\n".join(
                        [
                            *(json.dumps(r) for r in sums(3)),
                            "",
                            "",
                            "",
                            json.dumps(sums(4)[3]),
                            '{"question": "q", "answer": ""}',
                        ]
                        + [json.dumps(r) for r in sums(60)[5:]]
                    ),
                )
            ),
        ),
    ),
    Case(
        "latin1-csv",
        "a latin-1 CSV dataset",
        lambda fx: base_spec(
            fx,
            task=custom_task(
                fx.file(
                    "latin1.csv",
                    ("question,answer\n" + "".join(f"caf\xe9 {i}?,{i}\n" for i in range(50))).encode(
                        "latin-1"
                    ),
                )
            ),
        ),
    ),
    Case(
        "invalid-utf8-catalog",
        "an invalid-UTF-8 catalog",
        lambda fx: base_spec(
            fx,
            servers={
                "catalogs": [
                    fx.file("bad.csv", CATALOG_HEADER.encode() + b"gpu_1x,A100,1,1.10,us-east-1\xff\n")
                ]
            },
        ),
    ),
    Case("binary-spec", "a binary spec file", lambda fx: bytes(range(256)) * 4),
    Case(
        "zero-byte-catalog",
        "a 0-byte catalog",
        lambda fx: base_spec(fx, servers={"catalogs": [fx.file("empty.csv", b"")]}),
    ),
    Case(
        "dir-without-config",
        "a model directory without config.json",
        lambda fx: base_spec(fx, students=[{"name": "s", "model": fx.dir("no-config")}]),
    ),
    Case(
        "duplicate-student-names",
        "duplicate student names",
        lambda fx: base_spec(fx, students=[{"name": "nano", "model": "zoo:nano"}] * 2),
    ),
    Case("plan-empty-spec", "`stratos plan` on an empty spec file", lambda fx: b"", command="plan"),
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def run_case(case: Case, fx: Fixtures, python: str, repo: Path, timeout_s: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"case-{case.name}-", dir=fx.work))
    spec_doc = case.spec(fx)
    spec_path = home / "spec.yaml"
    spec_path.write_bytes(spec_doc if isinstance(spec_doc, bytes) else yaml.safe_dump(spec_doc).encode())
    env = {
        **os.environ,
        "STRATOS_HOME": str(home / "stratos"),
        "PREFECT_HOME": str(home / "prefect"),
        "STRATOS_ZOO_DIR": str(fx.work / "zoo"),
        "PYTHONPATH": str(repo),
        "OMP_NUM_THREADS": "1",
        **case.env(fx),
    }
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [python, "-m", "stratos.cli", case.command, str(spec_path)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            start_new_session=True,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = None, _text(exc.stdout), _text(exc.stderr)
        _kill_session_leftovers(home)
    seconds = time.monotonic() - started
    (home / "stderr.txt").write_text(err)
    lines = [line for line in err.splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if line.startswith(("error:", "note:"))), None)
    error = error or next((line for line in reversed(lines) if EXCEPTION.match(line)), None)
    return {
        "case": case.name,
        "input": case.what,
        "exit": code,
        "seconds": round(seconds, 1),
        "line": error or (lines[-1] if lines else ""),
        "first_line": lines[0] if lines else "",
        "stderr_lines": len(lines),
        "traceback": TRACEBACK in err or TRACEBACK in out,
        "left_behind": _left_behind(Path(env["STRATOS_HOME"])),
        "prefect_started": (Path(env["PREFECT_HOME"]) / "prefect.db").exists(),
    }


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _kill_session_leftovers(home: Path) -> None:
    """A timed-out case's processes (the CLI and any server it started) are ended, found by their env."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("PREFECT_HOME", "").startswith(str(home)):
                proc.kill()
        except psutil.Error:
            continue


def _left_behind(stratos_home: Path) -> list[str]:
    """Files a case left under STRATOS_HOME, apart from log files."""
    if not stratos_home.is_dir():
        return []
    return sorted(
        str(p.relative_to(stratos_home))
        for p in stratos_home.rglob("*")
        if p.is_file() and "logs" not in p.parts
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| case | exit | s | the line the user sees | traceback | lines | left behind |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        exit_code = "timeout" if r["exit"] is None else str(r["exit"])
        line = r["line"].replace("|", "\\|")
        line = line if len(line) <= 160 else line[:157] + "..."
        left = ", ".join(r["left_behind"][:3]) + (" (Prefect started)" if r["prefect_started"] else "")
        out.append(
            f"| {r['case']} | {exit_code} | {r['seconds']} | {line} | {'yes' if r['traceback'] else 'no'} | "
            f"{r['stderr_lines']} | {left or '-'} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose CLI runs (default: this one)")
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="interpreter to use")
    parser.add_argument("--work", type=Path, help="fixture and case directory (default: a new temporary one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a case may take (default 120)")
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    fx = Fixtures((args.work or Path(tempfile.mkdtemp(prefix="stratos-hardening-"))).resolve())
    build_fixtures(fx, args.python, args.repo)
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        rows.append(run_case(case, fx, args.python, args.repo.resolve(), args.timeout))
        print(f"{rows[-1]['case']}: exit {rows[-1]['exit']} in {rows[-1]['seconds']} s", file=sys.stderr)
    print(markdown(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
