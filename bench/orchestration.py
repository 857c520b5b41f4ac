"""Benchmark: what Prefect costs the pipeline -- the distill flow vs the same stages called directly; warm vs cold.

    .venv/bin/python bench/orchestration.py [--train-size 400] [--epochs 16] [--test-size 100] [--repeats 3]

One process, one workload (2-digit arithmetic, a recorded teacher, the nano
student trained in full, deployment off), four kinds of run, each in a fresh
STRATOS_HOME so "cold" means nothing is on disk yet:

    direct   the same stages with no Prefect at all: each stage task's plain
             function (`.fn`) and the GPU stages' job functions, built with the
             flow's own job builders (flows/distill.py), in the flow's order
    prefect  `run_flow(spec)`: the `distill` flow against a Prefect server on
             loopback (started once, below; its start-up is reported apart as
             `server_start_s`: it is paid once per server, or once per process
             in Prefect's embedded mode), with task runs, cache lookups,
             persisted results, logs and artifacts
    warm     `run_flow(spec)` again in the prefect run's home: every stage cached

direct and prefect alternate `--repeats` times; each figure is the best of its
repeats (the machine is shared). Targets: Prefect overhead
(prefect - direct) <= 10% of the cold prefect run; warm <= 10% of cold. Training
time swings by seconds between runs here, so the time each mode spends outside
the GPU stage functions is reported too: its difference is the steadier
estimate of what orchestration adds.

The workload is sized, not tiny: on the smoke spec (48 rows, 1 epoch, ~5 s of
work) Prefect's fixed few seconds per run would be most of the run, which says
nothing about a real distillation whose stages take minutes to hours. The
defaults (400 rows, 16 epochs: 400 steps) give a cold run of 40-55 s on 2 busy
CPU cores, training the largest part, as on a real run. At the smoke size
(`--train-size 48 --epochs 1 --test-size 24`) the same ~1 s of overhead is ~30%.
Models come from STRATOS_ZOO_DIR when set (reused as is: `zoo_prebuilt` in the
JSON), else a fresh zoo in the temporary directory; either way the nano student
is built before any timed run. Prefect's home is fresh too.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="stratos-bench-orch-"))
# Prefect reads its settings when first imported: point it at a fresh home and the bench's server first.
with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    PORT = _s.getsockname()[1]
os.environ.update(
    {
        "PREFECT_HOME": str(TMP / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
)
os.environ.setdefault("STRATOS_ZOO_DIR", str(TMP / "zoo"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_server() -> tuple[subprocess.Popen, float]:
    """`prefect server start` on loopback; returns it and the seconds until /api/health answered."""
    start = time.perf_counter()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(PORT)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            with urllib.request.urlopen(f"{os.environ['PREFECT_API_URL']}/health", timeout=2):
                return server, time.perf_counter() - start
        except OSError:
            if server.poll() is not None or time.perf_counter() - start > 180:
                raise RuntimeError("prefect server did not start") from None
            time.sleep(0.25)


def make_spec(train_size: int, epochs: float, test_size: int) -> dict[str, Any]:
    """2-digit sums; the teacher is a JSONL of the domain's own rationales for every question used."""
    from stratos.domains import get_domain
    from stratos.domains.base import completion_text
    from stratos.spec import TaskSpec

    task = {
        "domain": "arithmetic",
        "options": {"digits": 2},
        "train_size": train_size,
        "probe_size": 16,
        "test_size": test_size,
    }
    domain = get_domain(TaskSpec(**task))
    rows = [
        {"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)}
        for split, n in (("train", train_size + 16), ("test", test_size))
        for ex in domain.load(split, n, 0)
    ]
    teacher = TMP / "teacher.jsonl"
    teacher.write_text("\n".join(json.dumps(r) for r in rows))
    return {
        "name": "bench-orchestration",
        "task": task,
        "constraints": {"region": "us-east", "budget_usd": 200, "max_latency_ms": 200},
        "teachers": [{"name": "recorded", "kind": "stored", "model": str(teacher)}],
        "students": [{"name": "nano", "model": "zoo:nano"}],
        "strategy": {"num_samples": 1, "max_new_tokens": 32, "prescreen_size": 8, "prescreen_demos": 1},
        "training": {"num_train_epochs": epochs, "per_device_train_batch_size": 16, "learning_rate": 3e-3},
        "serve": {"enabled": False},
    }


def direct(spec) -> dict[str, Any]:
    """The flow's stages with no Prefect at all: each task's plain function (`.fn`) and the GPU stages'
    job functions, built with the flow's own job builders, for the one iteration this spec needs."""
    from flows.distill import catalog_refs, dataset_ref, open_store
    from flows.jobs import synthesis_job, training_job
    from flows.loop import Attempt, LoopOutcome
    from flows.result import Products, run_summary
    from flows.spend import run_budget
    from stratos.job_profile import job_profile
    from tasks import evaluate, select_student, select_teacher, synthesize, train
    from tasks.build_models import build_models
    from tasks.prepare_data import prepare_data
    from tasks.report import write_report
    from tasks.select_server import select_server

    task, store_uri = spec.task, open_store(spec).uri_for("")
    data = prepare_data.fn(task, dataset_ref(task), store_uri)
    models = build_models.fn(spec)
    servers = spec.servers
    choice = select_server.fn(spec.constraints, servers, catalog_refs(servers), store_uri, job_profile(spec))
    teacher, budget = models[spec.teachers[0].name], run_budget(spec, choice, store_uri)
    probe = select_teacher.probe_teachers.fn(
        [teacher],
        task,
        data.splits["probe"],
        choice.row,
        spec.constraints.budget_usd,
        spec.strategy,
        store_uri,
        budget,
    )
    students = [models[c.name] for c in spec.students]
    picked = select_student.prescreen_students.fn(
        students,
        teacher,
        probe,
        task,
        data.splits["probe"],
        choice.row,
        select_student.fit_constraints(spec.constraints),
        select_student.fit_settings(spec.training),
        spec.strategy,
        budget,
    )
    strategy = synthesize.choose_strategy.fn(probe.accuracy, spec.strategy)
    synth = synthesize.run_synthesis(synthesis_job(spec, teacher, data, strategy.mode, store_uri, budget))
    student = models[picked.chosen]
    trained = train.run_training(training_job(spec, student, synth, picked.method, store_uri, budget))
    test = data.splits["test"]
    evals = [
        evaluate.run_evaluation(
            evaluate.EvalJob(
                store_uri=store_uri,
                budget=budget,
                task=task,
                model=m,
                test=test,
                max_new_tokens=spec.strategy.max_new_tokens,
            )
        )
        for m in (teacher, student.trained(trained.model_uri, trained.model_sha256))
    ]
    loop = LoopOutcome(
        True, spec, [Attempt(0, {}, choice.chosen, probe.chosen, picked.chosen)], [], choice, probe, picked
    )
    made = Products(data, strategy, synth, trained, choice.chosen or "", evals[0], evals[1], None, [])
    summary = run_summary(spec, loop, made, budget.ledger().summary())
    write_report.fn(summary, evals[0], evals[1], choice.row, trained, teacher, store_uri)
    return {"student_accuracy": evals[1].accuracy, "steps": trained.result.steps}


STAGE_SECONDS: dict[str, float] = {}  # GPU stage function -> seconds spent inside it, current run


def time_stages() -> None:
    """Wrap the GPU stages' job functions (both modes call them by module attribute) to add up their time."""
    from tasks import evaluate, synthesize, train

    def timer(fn):
        def timed_stage(job):
            start = time.perf_counter()
            try:
                return fn(job)
            finally:
                spent = time.perf_counter() - start
                STAGE_SECONDS[fn.__name__] = STAGE_SECONDS.get(fn.__name__, 0.0) + spent

        timed_stage.__wrapped__ = fn
        return timed_stage

    for module, name in (
        (synthesize, "run_synthesis"),
        (train, "run_training"),
        (evaluate, "run_evaluation"),
    ):
        setattr(module, name, timer(getattr(module, name)))


def timed(label: str, home: Path, fn) -> tuple[float, float, Any]:
    """(total seconds, seconds outside the GPU stages, result) of one run in STRATOS_HOME=home."""
    os.environ["STRATOS_HOME"] = str(home)
    STAGE_SECONDS.clear()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    outside = seconds - sum(STAGE_SECONDS.values())
    stages = ", ".join(f"{name} {s:.2f}" for name, s in STAGE_SECONDS.items())
    log(
        f"  {label:<8} {seconds:7.2f} s, {outside:5.2f} s of it outside the GPU stages ({stages})  ({home.name})"
    )
    return seconds, outside, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=400, help="training questions (rows)")
    parser.add_argument("--epochs", type=float, default=16, help="training epochs")
    parser.add_argument("--test-size", type=int, default=100, help="held-out questions evaluated")
    parser.add_argument("--repeats", type=int, default=3, help="cold direct/prefect pairs; best of each")
    args = parser.parse_args()

    zoo_prebuilt = Path(os.environ["STRATOS_ZOO_DIR"]).is_dir()
    server, server_start_s = start_server()
    log(f"prefect server up in {server_start_s:.1f} s; temporary dir {TMP}")
    try:
        from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

        import flows.distill  # noqa: F401  (imports are not part of any run's time)
        import tasks.build_models
        import tasks.train  # noqa: F401
        from flows import run_flow
        from stratos.spec import parse_spec

        spec = parse_spec(make_spec(args.train_size, args.epochs, args.test_size))
        tasks.build_models.build_models.fn(
            spec
        )  # builds the nano student into the zoo now, not in a timed run
        time_stages()
        cold: dict[str, list[float]] = {"direct": [], "prefect": []}
        outside: dict[str, list[float]] = {"direct": [], "prefect": []}
        results = {}
        for i in range(args.repeats):
            for mode in ("direct", "prefect"):
                # refresh_cache: a fresh home changes most cache keys, not all (server selection has no
                # path in its inputs); every cold run recomputes and re-stores every stage.
                run = (lambda: direct(spec)) if mode == "direct" else (lambda: run_flow(spec))
                with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True}):
                    seconds, rest, results[mode] = timed(mode, TMP / f"{mode}-{i}", run)
                cold[mode].append(seconds)
                outside[mode].append(rest)
        warm_s, _, _ = timed("warm", TMP / f"prefect-{args.repeats - 1}", lambda: run_flow(spec))
    finally:
        from prefect.logging.handlers import APILogWorker

        with contextlib.suppress(Exception):  # the runs' last log lines, while the server is up
            APILogWorker.drain_all(timeout=5)
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)

    direct_s, prefect_s = min(cold["direct"]), min(cold["prefect"])
    overhead_s = prefect_s - direct_s
    # Training time swings by seconds from run to run on a shared machine; the time outside the GPU
    # stages does not, so its difference is the steadier estimate of what orchestration adds.
    outside_overhead_s = min(outside["prefect"]) - min(outside["direct"])
    same = results["prefect"].metrics["student_accuracy"] == results["direct"]["student_accuracy"]
    rows = [
        ("direct (no Prefect), cold", direct_s),
        ("Prefect flow, cold", prefect_s),
        ("Prefect flow, warm (all cached)", warm_s),
        ("Prefect overhead (cold - direct)", overhead_s),
        ("  the same, outside the GPU stages", outside_overhead_s),
    ]
    log(f"\n{'run':<36} {'seconds':>8}")
    for name, seconds in rows:
        log(f"{name:<36} {seconds:>8.2f}")
    log(
        f"overhead {overhead_s / prefect_s:.1%} of cold (target <= 10%); warm {warm_s / prefect_s:.1%} of cold "
        f"(target <= 10%); same student accuracy both ways: {same}"
    )
    print(
        json.dumps(
            {
                "benchmark": "orchestration",
                "machine": f"{platform.machine()} cpus={os.cpu_count()}",
                "workload": {
                    "domain": "arithmetic digits=2",
                    "train_size": args.train_size,
                    "epochs": args.epochs,
                    "test_size": args.test_size,
                    "train_steps": results["direct"]["steps"],
                    "student": "zoo:nano (full fine-tune)",
                    "zoo_prebuilt": zoo_prebuilt,
                },
                "server_start_s": round(server_start_s, 2),
                "cold_direct_s": [round(s, 2) for s in cold["direct"]],
                "cold_prefect_s": [round(s, 2) for s in cold["prefect"]],
                "direct_s": round(direct_s, 2),
                "prefect_cold_s": round(prefect_s, 2),
                "prefect_warm_s": round(warm_s, 2),
                "outside_stages_direct_s": [round(s, 2) for s in outside["direct"]],
                "outside_stages_prefect_s": [round(s, 2) for s in outside["prefect"]],
                "overhead_s": round(overhead_s, 2),
                "overhead_ratio": round(overhead_s / prefect_s, 4),
                "overhead_outside_stages_s": round(outside_overhead_s, 2),
                "overhead_outside_stages_ratio": round(outside_overhead_s / prefect_s, 4),
                "warm_ratio": round(warm_s / prefect_s, 4),
                "same_student_accuracy": same,
                "targets": {"max_overhead_ratio": 0.10, "max_warm_ratio": 0.10},
                "meets_targets": overhead_s / prefect_s <= 0.10 and warm_s / prefect_s <= 0.10,
            }
        )
    )


if __name__ == "__main__":
    main()
