"""Benchmark: sensitivity of the strategy threshold τ on the weak-teacher scenario.

    .venv/bin/python bench/strategy_threshold.py [--train 200] [--probe 100]

The zoo's weak mahjong teacher (small variant, as tests/test_strategy_modes.py)
is probed once; for each τ in {0.25, 0.5, 0.75} the mode that τ selects is run
(each mode's synthesis is computed once and shared by the τ values that choose
it) and the resulting dataset is reported: mode, accepted traces, acceptance
rate, coverage of the training questions. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratos import zoo  # noqa: E402
from stratos.backends.hf import HFBackend  # noqa: E402
from stratos.domains import get_domain  # noqa: E402
from stratos.spec import ModelCandidate, TaskSpec  # noqa: E402
from tasks.select_teacher import select_teacher  # noqa: E402
from tasks.synthesize import choose_mode, synthesize  # noqa: E402

MAHJONG_SMALL = {"hand_size": 10, "suits": 1, "honors": False}
TAUS = (0.25, 0.5, 0.75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=200, help="training questions synthesized per mode")
    parser.add_argument("--probe", type=int, default=100, help="probe questions for the teacher's accuracy")
    args = parser.parse_args()

    domain = get_domain(TaskSpec(domain="mahjong", options=MAHJONG_SMALL))
    started = time.perf_counter()
    teacher_dir = zoo.train_teacher(domain, "weak")
    backend = HFBackend(teacher_dir, name="zoo-weak-mahjong")
    pool = domain.load("train", args.probe + args.train, 3)
    probe, questions = pool[: args.probe], pool[args.probe :]
    candidate = ModelCandidate(name=backend.name, model=str(teacher_dir))
    choice = select_teacher([candidate], {backend.name: backend}, domain, probe, 1e9, 0, 80, 0.0)
    print(f"weak teacher probe accuracy {choice.accuracy:.3f} on {len(probe)} questions", file=sys.stderr)

    reports = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tau in TAUS:
            mode, why = choose_mode(choice.accuracy, tau)
            if mode not in reports:
                reports[mode] = synthesize(
                    backend,
                    domain,
                    questions,
                    mode,
                    Path(tmp) / mode,
                    num_samples=4,
                    max_attempts=8,
                    temperature=0.7,
                )
            r = reports[mode]
            rows.append(
                {
                    "tau": tau,
                    "mode": mode,
                    "accepted": r.accepted,
                    "samples": r.samples,
                    "acceptance_rate": round(r.acceptance_rate, 4),
                    "coverage": round(r.coverage, 4),
                }
            )
            print(
                f"τ={tau:<5} {mode:<10} accepted {r.accepted:4d}/{r.samples:<4d} "
                f"({r.acceptance_rate:.1%}), coverage {r.coverage:.1%}",
                file=sys.stderr,
            )
        # The mode no τ chose, for contrast: what the other branch would have produced.
        other = "alignment" if "injection" in reports else "injection"
        r = synthesize(
            backend,
            domain,
            questions,
            other,
            Path(tmp) / other,
            num_samples=4,
            max_attempts=8,
            temperature=0.7,
        )
        contrast = {
            "mode": other,
            "accepted": r.accepted,
            "samples": r.samples,
            "acceptance_rate": round(r.acceptance_rate, 4),
            "coverage": round(r.coverage, 4),
        }
    print(
        json.dumps(
            {
                "benchmark": "strategy_threshold",
                "scenario": "mahjong weak teacher",
                "options": MAHJONG_SMALL,
                "teacher_probe_accuracy": choice.accuracy,
                "train_questions": len(questions),
                "by_tau": rows,
                "other_mode_for_contrast": contrast,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
