"""Benchmark: the paper's result at small scale, through the stage functions the flow runs.

    .venv/bin/python bench/quality.py [--scenario mahjong|arithmetic|prescreen|all] [--out DIR] [--cold] [--smoke]

Scenarios (each reads its spec from examples/, so the figures are those of the shipped specs):
    mahjong     examples/mahjong-weak-teacher.yaml. The weak zoo teacher is probed, choose_mode
                picks Knowledge Injection, the pre-screened student is trained on the accepted
                traces and scored on the held-out test split next to the teacher. Ablation: the
                same student trained on what forced Knowledge Alignment keeps.
                Targets (issue 8): student >= 2x teacher; ablation >= 10 points below injection.
    arithmetic  examples/arithmetic-strong-teacher.yaml. The strong teacher leads to Knowledge
                Alignment; target: the student reaches >= 90% of the teacher's accuracy at a
                smaller size and latency (parameters and measured latency of both).
    prescreen   the arithmetic spec with five students of three sizes (random nano and micro;
                nano, micro and mini briefly pre-trained: zoo:base-*), each pre-screened as
                select_student does (accuracy under the better of few-shot and zero-shot prompts)
                and distilled on the same synthesized data with the same short budget
                (PRESCREEN_EPOCHS); pre-screen and final accuracy side by side, with their Spearman
                rank correlation (undefined when either side is constant).

Stages run in the flow's order: prepare data -> select server (builtin catalogs) -> build or load
the zoo models -> probe teachers -> pre-screen students -> synthesize -> train -> evaluate. Each
is timed. `--cold` points the zoo and the work directory at fresh empty folders, so the teacher
build is part of the time as on a first run; without it, finished synthesis and training under
--out are reused (their own recorded wall times are reported next to the stage times).

`--smoke` (tests/test_bench.py) runs the same stages on a few questions for one epoch: the code
path, not the figures (the zoo still trains the teachers it needs on first use).

Progress goes to stderr, the tables to stdout; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from stratos import zoo  # noqa: E402
from stratos.backends.base import Backend, SamplingParams  # noqa: E402
from stratos.backends.factory import from_candidate  # noqa: E402
from stratos.catalog import load_catalogs  # noqa: E402
from stratos.domains import get_domain  # noqa: E402
from stratos.domains.base import Domain, Example  # noqa: E402
from stratos.evaluation import EvalResult, evaluate  # noqa: E402
from stratos.pfg import select_server  # noqa: E402
from stratos.spec import DistillSpec, ModelCandidate, load_spec  # noqa: E402
from tasks.prepare_data import load_examples, write_splits  # noqa: E402
from tasks.select_student import StudentChoice, make_demos, select_student, student_params  # noqa: E402
from tasks.select_teacher import TeacherChoice, planned_questions, select_teacher  # noqa: E402
from tasks.synthesize import Mode, choose_mode, synthesize  # noqa: E402
from tasks.train import train_student  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAHJONG_SPEC = ROOT / "examples" / "mahjong-weak-teacher.yaml"
ARITHMETIC_SPEC = ROOT / "examples" / "arithmetic-strong-teacher.yaml"
LATENCY_QUESTIONS = 20  # test questions answered one request at a time for the latency figures
# Pre-screen validation: random-init students score 0 before training, so on their own they cannot
# show whether the pre-screen predicts anything; briefly pre-trained ones (zoo:base-*) have some
# aptitude, as hub base models do. With the spec's full 10 epochs every student reaches ~100% on
# two-digit sums, so all are distilled with the same short budget, where they still differ.
PRESCREEN_STUDENTS = ["zoo:nano", "zoo:micro", "zoo:base-nano", "zoo:base-micro", "zoo:base-mini"]
PRESCREEN_EPOCHS = 2
SMOKE = False  # set by --smoke: every spec shrunk by smoke_sized
log = logging.getLogger("bench.quality")


class Clock:
    """Wall time of each stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("%s ...", name)
        began = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - began, 1)
        log.info("%s done in %.1fs", name, self.seconds[name])


@dataclass
class Setup:
    """What every scenario shares up to synthesis: data, server, teacher choice, pre-screen."""

    spec: DistillSpec
    domain: Domain
    splits: dict[str, list[Example]]
    teacher: ModelCandidate  # the chosen teacher, its model resolved to a local path
    teacher_backend: Backend
    teacher_choice: TeacherChoice
    students: dict[str, ModelCandidate]  # resolved, in spec order
    student_choice: StudentChoice

    def params(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.spec.strategy.max_new_tokens, temperature=0.0)


def smoke_sized(spec: DistillSpec) -> DistillSpec:
    """The spec at a few questions and one epoch: the code path runs, the figures mean nothing."""
    assert spec.task is not None
    task = spec.task.model_copy(update={"train_size": 32, "probe_size": 16, "test_size": 16})
    strategy = spec.strategy.model_copy(update={"prescreen_size": 8})
    training = spec.training.model_copy(update={"num_train_epochs": 1})
    return spec.model_copy(update={"task": task, "strategy": strategy, "training": training})


def read_spec(path: Path) -> DistillSpec:
    """An example spec, shrunk under --smoke."""
    spec = load_spec(path)
    return smoke_sized(spec) if SMOKE else spec


def resolved(candidate: ModelCandidate, domain: Domain, seed: int) -> ModelCandidate:
    """The candidate with a zoo reference replaced by its local path (built on first use)."""
    if candidate.kind != "hf":
        return candidate
    return candidate.model_copy(update={"model": zoo.resolve(candidate.model, domain, seed)})


def setup(spec: DistillSpec, out: Path, clock: Clock) -> Setup:
    """Prepare data, choose a server, build/load the zoo models, probe teachers, pre-screen students."""
    assert spec.task is not None, "the example specs have a task section"
    domain = get_domain(spec.task)
    with clock.stage("prepare_data"):
        prepared = write_splits(spec.task, out / "data")
        splits = {name: load_examples(prepared.path(name)) for name in ("train", "probe", "test")}
    with clock.stage("select_server"):
        servers, _ = load_catalogs(spec.servers.catalog_paths())
        selection = select_server(servers, spec.constraints, spec.servers, with_baselines=False)
        if not selection.feasible:
            raise SystemExit(f"{spec.name}: no server is feasible: {selection.reason}")
        server = selection.row(selection.chosen)
    with clock.stage("teacher_build"):  # the zoo trains the teacher on first use (cold run)
        teachers = [resolved(t, domain, spec.task.seed) for t in spec.teachers]
    with clock.stage("student_models"):
        students = {s.name: resolved(s, domain, spec.task.seed) for s in spec.students}
    with clock.stage("teacher_probe"):
        backends = {t.name: from_candidate(t) for t in teachers}
        s = spec.strategy
        choice = select_teacher(
            teachers,
            backends,
            domain,
            splits["probe"],
            spec.constraints.budget_usd,
            planned_questions(spec.task.train_size, s.num_samples, s.max_attempts),
            float(server["total_gpu_memory_gb"]),
            float(server["cost_per_hour"]),
            s.max_new_tokens,
        )
    if choice.chosen is None:
        raise SystemExit(f"{spec.name}: no teacher chosen: {choice.reason}")
    teacher_backend = backends[choice.chosen]
    with clock.stage("prescreen"):
        demos = make_demos(
            teacher_backend, domain, splits["probe"], choice.probe, s.prescreen_demos, s.max_new_tokens
        )
        student_backends = {name: from_candidate(c) for name, c in students.items()}
        student_choice = select_student(
            list(students.values()),
            student_backends,
            domain,
            server,
            spec.constraints,
            spec.training,
            splits["probe"][: s.prescreen_size],
            demos,
            s.prescreen_threshold,
            s.max_new_tokens,
        )
    teacher = next(t for t in teachers if t.name == choice.chosen)
    return Setup(spec, domain, splits, teacher, teacher_backend, choice, students, student_choice)


def synthesis_for(run: Setup, mode: Mode, out: Path, clock: Clock, tag: str) -> dict[str, Any]:
    """Synthesize the training set in `mode` (resumes from `out`); the report as a dict."""
    s = run.spec.strategy
    with clock.stage(f"synthesis_{tag}"):
        report = synthesize(
            run.teacher_backend,
            run.domain,
            run.splits["train"],
            mode,
            out / f"synthesis-{mode}",
            s.num_samples,
            s.max_attempts,
            s.temperature,
            s.max_new_tokens,
            seed=0,
        )
    log.info(
        "%s: %d accepted of %d samples, %.1f%% of questions covered, verdicts %s",
        mode,
        report.accepted,
        report.samples,
        100 * report.coverage,
        report.verdicts,
    )
    return report.to_dict()


def distil(
    run: Setup, student: str, synthesis: dict[str, Any], out: Path, clock: Clock, tag: str
) -> dict[str, Any]:
    """Train `student` on a synthesized set, then score it on the held-out test split."""
    base = run.students[student].model
    with clock.stage(f"train_{tag}"):
        trained = train_student(
            base,
            synthesis["train_path"],
            run.domain,
            run.spec.training,
            out / f"train-{synthesis['mode']}-{student}-e{run.spec.training.num_train_epochs:g}",
        )
    with clock.stage(f"evaluate_{tag}"):
        result = evaluate(
            from_candidate(ModelCandidate(name=student, model=trained.model_dir)),
            run.domain,
            run.splits["test"],
            run.params(),
        )
    return {
        "student": student,
        "parameters": student_params(run.students[student]),
        "mode": synthesis["mode"],
        "accepted": synthesis["accepted"],
        "samples": synthesis["samples"],
        "coverage": round(synthesis["coverage"], 4),
        "train_rows": synthesis["accepted"],
        "train_steps": trained.steps,
        "train_wall_s": trained.wall_time_s,
        "train_reused": trained.reused,
        "loss_last": trained.loss_last,
        "test_accuracy": result.accuracy,
        "beyond_majority": beyond_majority(result, majority_answer(run.splits["test"])[0]),
        "model_dir": trained.model_dir,
    }


def majority_answer(examples: list[Example]) -> tuple[str, float]:
    """The most common gold answer of a split and its share: what always giving it would score."""
    answer, count = Counter(ex.answer for ex in examples).most_common(1)[0]
    return answer, count / len(examples)


def beyond_majority(result: EvalResult, answer: str) -> float:
    """Accuracy on the questions whose gold answer is not the majority one (a constant guess scores 0)."""
    rest = [r for r in result.records if r.gold != answer]
    return sum(r.correct for r in rest) / len(rest) if rest else 0.0


def teacher_on_test(run: Setup, clock: Clock) -> dict[str, Any]:
    """The chosen teacher scored on the same held-out split as the students."""
    with clock.stage("evaluate_teacher"):
        result = evaluate(run.teacher_backend, run.domain, run.splits["test"], run.params())
    return {
        "name": run.teacher.name,
        "parameters": student_params(run.teacher),
        "probe_accuracy": run.teacher_choice.accuracy,
        "test_accuracy": result.accuracy,
        "test_n": result.n,
        "beyond_majority": beyond_majority(result, majority_answer(run.splits["test"])[0]),
    }


def single_request_latency(backend: Backend, run: Setup) -> float:
    """p50 seconds per request, one request at a time (no batching), on the first test questions."""
    questions = run.splits["test"][:LATENCY_QUESTIONS]
    return evaluate(backend, run.domain, questions, run.params(), batch_size=1).latency_p50_s


def prescreen_rows(choice: StudentChoice) -> dict[str, dict[str, Any]]:
    return {
        p.name: {"fewshot": p.fewshot_accuracy, "zeroshot": p.zeroshot_accuracy, "prescreen": p.capacity}
        for p in choice.prescreen
    }


# --- scenarios ---------------------------------------------------------------------------------


def chosen_run(spec: DistillSpec, out: Path, clock: Clock):
    """What the flow does with a spec: its chosen student distilled in the chosen mode, and the teacher."""
    run = setup(spec, out, clock)
    student = run.student_choice.chosen
    if student is None:
        raise SystemExit(f"{spec.name}: no student passed: {run.student_choice.reason}")
    mode, why = choose_mode(run.teacher_choice.accuracy or 0.0, spec.strategy.tau, spec.strategy.force_mode)
    main = distil(run, student, synthesis_for(run, mode, out, clock, "chosen"), out, clock, "chosen")
    return run, student, mode, why, main, teacher_on_test(run, clock)


def scenario_mahjong(out: Path) -> dict[str, Any]:
    """Weak teacher: injection vs the teacher, and vs forced alignment (ablation)."""
    spec, clock = read_spec(MAHJONG_SPEC), Clock()
    run, student, mode, why, main, teacher = chosen_run(spec, out, clock)
    pipeline = sum(clock.seconds.values())
    ablation_mode, _ = choose_mode(run.teacher_choice.accuracy or 0.0, spec.strategy.tau, "alignment")
    ablation = distil(
        run, student, synthesis_for(run, ablation_mode, out, clock, "ablation"), out, clock, "ablation"
    )
    ratio = main["test_accuracy"] / teacher["test_accuracy"] if teacher["test_accuracy"] else None
    gap = main["test_accuracy"] - ablation["test_accuracy"]
    majority, share = majority_answer(run.splits["test"])
    return {
        "spec": str(MAHJONG_SPEC.relative_to(ROOT)),
        "options": spec.task.options,
        "mode": mode,
        "mode_reason": why,
        "majority_answer": {"answer": majority, "share": share},
        "teacher": teacher,
        "student": main,
        "ablation": ablation,
        "student_over_teacher": ratio,
        "injection_minus_alignment": round(gap, 4),
        "prescreen": prescreen_rows(run.student_choice),
        "stage_seconds": clock.seconds,
        "pipeline_seconds": round(pipeline, 1),
        "targets": {
            "student_2x_teacher": ratio is not None and ratio >= 2.0,
            "ablation_10_points_below": gap >= 0.10,
        },
    }


def scenario_arithmetic(out: Path) -> dict[str, Any]:
    """Strong teacher: alignment; student accuracy, size and latency next to the teacher's."""
    spec, clock = read_spec(ARITHMETIC_SPEC), Clock()
    run, student, mode, why, main, teacher = chosen_run(spec, out, clock)
    with clock.stage("latency"):
        student_backend = from_candidate(ModelCandidate(name=student, model=main["model_dir"]))
        main["latency_p50_s"] = single_request_latency(student_backend, run)
        teacher["latency_p50_s"] = single_request_latency(run.teacher_backend, run)
    share = main["test_accuracy"] / teacher["test_accuracy"] if teacher["test_accuracy"] else None
    return {
        "spec": str(ARITHMETIC_SPEC.relative_to(ROOT)),
        "options": spec.task.options,
        "mode": mode,
        "mode_reason": why,
        "teacher": teacher,
        "student": main,
        "student_share_of_teacher": share,
        "size_ratio": main["parameters"] / teacher["parameters"],
        "latency_ratio": main["latency_p50_s"] / teacher["latency_p50_s"],
        "stage_seconds": clock.seconds,
        "pipeline_seconds": round(sum(clock.seconds.values()), 1),
        "targets": {
            "student_90pct_of_teacher": share is not None and share >= 0.9,
            "smaller": main["parameters"] < teacher["parameters"],
            "faster": main["latency_p50_s"] < teacher["latency_p50_s"],
        },
    }


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant."""
    frame = pd.DataFrame({"x": xs, "y": ys})
    if len(frame) < 3 or frame["x"].nunique() < 2 or frame["y"].nunique() < 2:
        return None
    ranks = frame.rank()  # average ranks for ties; Pearson on ranks is Spearman (no scipy needed)
    return float(ranks["x"].corr(ranks["y"]))


def prescreen_spec() -> DistillSpec:
    """The arithmetic spec with students of three sizes, random and briefly pre-trained, and a short budget."""
    spec = read_spec(ARITHMETIC_SPEC)
    students = [ModelCandidate(name=ref.removeprefix("zoo:"), model=ref) for ref in PRESCREEN_STUDENTS]
    training = spec.training.model_copy(update={"num_train_epochs": PRESCREEN_EPOCHS})
    return spec.model_copy(update={"students": students, "training": training})


def scenario_prescreen(out: Path) -> dict[str, Any]:
    """Students of three sizes: pre-screen accuracy vs accuracy after the same distillation budget."""
    spec, clock = prescreen_spec(), Clock()
    run = setup(spec, out, clock)
    mode, _ = choose_mode(run.teacher_choice.accuracy or 0.0, spec.strategy.tau, spec.strategy.force_mode)
    synthesis = synthesis_for(run, mode, out, clock, "shared")
    screened = prescreen_rows(run.student_choice)
    rows = []
    for name in run.students:  # spec order: smallest first
        final = distil(run, name, synthesis, out, clock, name)
        rows.append(
            {
                "student": name,
                "parameters": final["parameters"],
                **screened.get(name, {}),
                "final_accuracy": final["test_accuracy"],
                "train_wall_s": final["train_wall_s"],
            }
        )
    rho = spearman([r.get("prescreen", 0.0) for r in rows], [r["final_accuracy"] for r in rows])
    return {
        "spec": str(ARITHMETIC_SPEC.relative_to(ROOT)),
        "mode": mode,
        "rows": rows,
        "spearman": rho,
        "stage_seconds": clock.seconds,
    }


# --- output --------------------------------------------------------------------------------------


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    """Readable tables on stdout (the JSON line follows them)."""
    for name in ("mahjong", "arithmetic"):
        if name not in results:
            continue
        r = results[name]
        print(f"\n## {name}: {r['mode']} ({r['mode_reason']})\n")
        print(
            "| model | parameters | test accuracy | beyond the majority answer | p50 latency (ms, 1 request) |"
        )
        print("|---|---:|---:|---:|---:|")
        rows = [
            ("teacher " + r["teacher"]["name"], r["teacher"]),
            (f"student {r['student']['student']} ({r['mode']})", r["student"]),
        ]
        if "ablation" in r:
            rows.append((f"student {r['ablation']['student']} (alignment forced)", r["ablation"]))
        for label, m in rows:
            latency = f"{m['latency_p50_s'] * 1000:.1f}" if "latency_p50_s" in m else "-"
            print(
                f"| {label} | {m['parameters']:,} | {m['test_accuracy']:.1%} | {m['beyond_majority']:.1%} | {latency} |"
            )
        if "majority_answer" in r:
            m = r["majority_answer"]
            print(
                f"\nalways answering '{m['answer']}' (the most common gold answer) would score {m['share']:.1%}"
            )
        print("\nstage seconds: " + ", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items()))
    if "prescreen" in results:
        r = results["prescreen"]
        print("\n## pre-screen vs final accuracy (arithmetic)\n")
        print("| student | parameters | few-shot | zero-shot | pre-screen | final |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in r["rows"]:
            print(
                f"| {row['student']} | {row['parameters']:,} | {row.get('fewshot', 0):.1%} | "
                f"{row.get('zeroshot', 0):.1%} | {row.get('prescreen', 0):.1%} | {row['final_accuracy']:.1%} |"
            )
        rho = r["spearman"]
        print(
            f"\nSpearman rank correlation: {'undefined (a side is constant)' if rho is None else f'{rho:.2f}'}"
        )


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


SCENARIOS = {"mahjong": scenario_mahjong, "arithmetic": scenario_arithmetic, "prescreen": scenario_prescreen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="work directory; finished synthesis and training there are reused "
        "(default /tmp/stratos-bench-quality, -smoke under --smoke)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="fresh empty zoo and work directory (first-run timing)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few questions, one epoch: the path only")
    args = parser.parse_args()
    global SMOKE
    SMOKE = args.smoke
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", force=True
    )
    out = args.out or Path(f"/tmp/stratos-bench-quality{'-smoke' if args.smoke else ''}")
    if args.cold:
        out = out / datetime.now().strftime("cold-%Y%m%d-%H%M%S")
        os.environ[zoo.ZOO_ENV] = str(out / "zoo")  # read at each zoo call: nothing cached is found
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    started, load_before = time.perf_counter(), machine()["load_average"]
    # prescreen shares arithmetic's work directory: its synthesis is reused
    results = {name: SCENARIOS[name](out / ("arithmetic" if name == "prescreen" else name)) for name in names}
    print_tables(results)
    print(
        json.dumps(
            {
                "benchmark": "quality",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {**machine(), "load_average_at_start": load_before},
                "cold": args.cold,
                "zoo": str(zoo.zoo_dir()),
                "scenarios": results,
                "seconds": round(time.perf_counter() - started, 1),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
