"""The constraint-violation loop over the real stage functions: relax until a student passes, or report."""

from __future__ import annotations

import pytest

from flows.loop import run_constraint_loop
from stratos import zoo
from stratos.backends.hf import HFBackend
from stratos.catalog import load_catalogs
from stratos.domains import get_domain
from stratos.pfg import select_server
from stratos.relax import relax
from stratos.spec import DistillSpec, ModelCandidate, TaskSpec
from tasks.select_server import choice_of
from tasks.select_student import make_demos, select_student, student_params
from tasks.select_teacher import select_teacher


@pytest.fixture(scope="module")
def arithmetic():
    return get_domain(TaskSpec(domain="arithmetic"))


@pytest.fixture(scope="module")
def servers():
    return load_catalogs(DistillSpec().servers.catalog_paths())[0]


def stages(spec, servers, domain, backends):
    """The three stage functions the loop calls, over the real implementations."""
    probe = domain.load("train", 24, 5)
    sample = domain.load("test", 16, 0)

    def server(s):
        return choice_of(select_server(servers, s.constraints, s.servers), s.servers.weights)

    def teacher(s, selection):
        row = selection.row
        return select_teacher(
            s.teachers,
            backends,
            domain,
            probe,
            s.constraints.budget_usd,
            1000,
            row.total_gpu_memory_gb,
            row.cost_per_hour,
            max_new_tokens=48,
        )

    def student(s, selection, teacher_choice):
        demos = make_demos(backends[teacher_choice.chosen], domain, probe, teacher_choice.probe, 2, 48)
        return select_student(
            s.students,
            backends,
            domain,
            selection.row.model_dump(),
            s.constraints,
            s.training,
            sample,
            demos,
            s.strategy.prescreen_threshold,
            48,
        )

    return server, teacher, student


@pytest.mark.slow  # trains the strong arithmetic teacher (minutes) unless the zoo has it
def test_students_failing_prescreen_relax_step_by_step_until_one_passes(arithmetic, servers):
    teacher_dir = zoo.train_teacher(arithmetic, "strong")
    nano, mini = zoo.random_model(arithmetic, "nano"), zoo.random_model(arithmetic, "mini")
    students = [
        ModelCandidate(name="nano-random", model=str(nano)),
        ModelCandidate(name="distilled-micro", model=str(teacher_dir)),
        ModelCandidate(name="mini-random", model=str(mini)),
    ]
    sizes = [student_params(s) for s in students]
    spec = DistillSpec.model_validate(
        {
            "task": {"domain": "arithmetic"},
            "constraints": {"region": "us-east", "max_student_params": sizes[0], "budget_usd": 200},
            "teachers": [{"name": "zoo-strong", "model": str(teacher_dir)}],
            "students": [s.model_dump() for s in students],
            "strategy": {"prescreen_threshold": 0.5},
            "relax": {"steps": [{"action": "larger_student"}, {"action": "larger_student"}]},
        }
    )
    backends = {c.name: HFBackend(c.model) for c in [*spec.teachers, *students]}
    outcome = run_constraint_loop(spec, *stages(spec, servers, arithmetic, backends), sizes)
    assert outcome.feasible, outcome.report()
    assert outcome.student.chosen == "distilled-micro"
    assert [a.failed_stage for a in outcome.attempts] == ["student", None]
    assert "no student reaches pre-screen threshold" in outcome.attempts[0].why
    assert "larger_student: student size cap" in outcome.relaxations[0]
    screened = {r.name: r.capacity for r in outcome.student.prescreen}
    assert screened["distilled-micro"] >= 0.5 > screened["nano-random"]
    assert "mini-random" not in screened  # still above the relaxed cap: never loaded


def test_impossible_spec_ends_in_the_infeasible_report_without_a_trace(arithmetic, servers):
    spec = DistillSpec.model_validate(
        {
            "constraints": {
                "region": "australia",
                "min_gpu_memory_gb": 4000,
                "max_hourly_usd": 2,
                "budget_usd": 20,
            },
            "relax": {
                "steps": [
                    {"action": "higher_hourly_cap", "factor": 2},
                    {"action": "larger_server"},
                    {"action": "higher_budget", "factor": 2},
                ]
            },
        }
    )
    never = pytest.fail  # teacher/student stages must not run when no server is feasible
    outcome = run_constraint_loop(spec, stages(spec, servers, arithmetic, {})[0], never, never, [])
    assert not outcome.feasible and len(outcome.attempts) == 4
    assert all(a.failed_stage == "server" for a in outcome.attempts)
    report = outcome.report()
    assert (
        report.startswith("INFEASIBLE")
        and "hourly cap $2/h -> $4/h" in report
        and "budget $20 -> $40" in report
    )
    assert outcome.spec.constraints.max_hourly_usd == 4 and outcome.spec.constraints.budget_usd == 40


def test_relax_steps_are_bounded_and_say_what_changed():
    spec = DistillSpec.model_validate({"constraints": {"max_student_params": 100}})
    same, note = relax(
        spec,
        DistillSpec.model_validate({"relax": {"steps": [{"action": "larger_student"}]}}).relax.steps[0],
        None,
        [50, 100],
    )
    assert same is spec and "no larger student" in note
