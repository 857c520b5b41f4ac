"""The `distill` flow: one DistillSpec in, a distilled, evaluated and served student out.

Read top to bottom it is the pipeline of SPEC.md, one Prefect task per stage (tasks/<stage>.py):

    1 prepare data -> 2 build models -> 3 select server -> 4 select teacher -> 5 pre-screen students
      (no student passes? relax the constraints by policy, approved in the UI when relax.approval
       is ui (flows/approval.py), and loop back to 3: flows/loop.py)
    -> provision the chosen server, when asked (flows/provision.py; torn down whatever happens)
    -> 6 choose strategy -> 7 synthesize -> 8 train -> 9 evaluate -> 10 serve -> 11 report

Every stage's cache key is its inputs (spec sections, and records that carry content hashes:
splits, resolved models, catalog files) plus its source, with persisted results: an identical
second run is served from the cache, and a changed training setting re-runs training and what
follows only. The GPU stages (7-10) run where the Dispatcher places them: in this process by
default, on the chosen server's Prefect worker when `workers` maps it to a pool or provisioning
launched it. Every stage charges the run's ledger (stratos/ledger.py); when the next unit of work
would overspend the budget the run ends as `budget_exhausted` and a re-run with more resumes.
The served endpoint's cached record is trusted only while the endpoint still answers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import State

from blocks.storage import ArtifactStoreBlock
from flows.approval import ask_in_ui
from flows.checks import first_check
from flows.dispatch import Dispatcher
from flows.jobs import evaluate_on_test, serve_if_enabled, synthesis_job, training_job
from flows.loop import LoopOutcome, as_declared, run_constraint_loop
from flows.provision import stage_runner
from flows.result import (
    DistillResult,
    Products,
    completed,
    exhausted,
    infeasible,
    publish_artifacts,
    run_summary,
)
from flows.server import owner_tags_off_task_runs
from flows.spend import first_interval_usd, for_dispatcher, run_budget, synthesis_per_question
from stratos.files import FileRef
from stratos.job_profile import job_profile
from stratos.ledger import BudgetExhausted
from stratos.progress import show_progress_in_runs
from stratos.spec import DistillSpec, ServerSettings, TaskSpec, require_runnable
from stratos.storage import ArtifactStore, LocalStore, from_uri, stratos_home
from tasks.build_models import ResolvedModel, build_models
from tasks.prepare_data import PreparedData, prepare_data
from tasks.report import write_report
from tasks.select_server import ServerChoice, select_server
from tasks.select_student import fit_constraints, fit_settings, prescreen_students
from tasks.select_teacher import TeacherChoice, probe_teachers
from tasks.synthesize import choose_strategy, synthesize_data
from tasks.train import train

STAGES = 11


def say(stage: int, message: str) -> None:
    """Progress for the person watching: the run's log (terminal and Prefect UI)."""
    get_run_logger().info(f"[{stage}/{STAGES}] {message}")


@flow(name="distill", persist_result=True, validate_parameters=False)  # first_check validates
def distill(spec: DistillSpec) -> DistillResult:
    """Distil a teacher into a student for spec.task under spec.constraints, serve it, and report."""
    show_progress_in_runs()
    with owner_tags_off_task_runs():  # the owner tags mark the flow run, not each task run
        spec = first_check(spec)
        if isinstance(spec, State):  # a bad input ends the run here, in one line
            return spec  # type: ignore[return-value]  (Prefect ends the run in this state)
        task = require_runnable(spec)
        store_uri = open_store(spec).uri_for("")
        say(1, f"preparing data for '{task.domain}' in {store_uri}")
        data = prepare_data(task, dataset_ref(task), store_uri)
        say(2, "building models (zoo models are built on first use)")
        models = build_models(spec)
        say(3, "selecting server, teacher and student (relaxing constraints if none passes)")
        loop = constraint_loop(spec, models, data, store_uri)
        say(5, loop.report())
        if not loop.feasible:
            result = infeasible(spec, loop)
        else:
            try:
                # the chosen server: its pool, launched if asked, downed after
                with stage_runner(loop) as dispatcher:
                    result = distil_and_serve(loop, models, data, store_uri, dispatcher)
            except BudgetExhausted as err:
                say(11, str(err))
                assert loop.selection is not None
                result = exhausted(loop, err, run_budget(loop.spec, loop.selection, store_uri).ledger())
        publish_artifacts(result, loop)
        return result


def distil_and_serve(
    loop: LoopOutcome,
    models: dict[str, ResolvedModel],
    data: PreparedData,
    store_uri: str,
    dispatcher: Dispatcher,
) -> DistillResult:
    """Stages 6-11 with the winning iteration's (possibly relaxed) spec, each unit of work within the budget."""
    spec, choice, picked = loop.spec, loop.selection, loop.student
    assert choice is not None and loop.teacher is not None and picked is not None and picked.chosen
    budget = for_dispatcher(run_budget(spec, choice, store_uri), dispatcher)
    strategy = choose_strategy(loop.teacher.accuracy, spec.strategy)
    say(6, f"strategy: {strategy.reason}")
    teacher, student = models[loop.teacher.chosen], models[picked.chosen]
    say(7, f"synthesizing training data with {teacher.name} ({strategy.mode})")
    job = synthesis_job(
        spec, teacher, data, strategy.mode, store_uri, budget, synthesis_per_question(loop, spec)
    )
    synthesis = synthesize_data(job, dispatcher)
    say(8, f"training {student.name} ({picked.method}) on {synthesis.report.accepted} examples")
    first = first_interval_usd(spec, choice, student.name)
    trained = train(
        training_job(spec, student, synthesis, picked.method, store_uri, budget, first), dispatcher
    )
    ran_on = dispatcher.current
    say(9, "evaluating teacher and student on the held-out split")
    teacher_eval = evaluate_on_test(loop, teacher, data, store_uri, dispatcher, budget)
    trained_student = student.trained(trained.model_uri, trained.model_sha256)
    student_eval = evaluate_on_test(loop, trained_student, data, store_uri, dispatcher, budget)
    say(
        10,
        "serving the student (health, smoke and parity)"
        if spec.serve.enabled
        else "serving off (serve.enabled)",
    )
    served = serve_if_enabled(spec, trained, student_eval, data, store_uri, dispatcher, budget)
    made = Products(
        data,
        strategy,
        synthesis,
        trained,
        ran_on,
        teacher_eval,
        student_eval,
        served,
        dispatcher.failovers,
        dispatcher.cluster,
    )
    say(11, "writing the report")
    summary = run_summary(spec, loop, made, budget.ledger().summary(choice.row.job_usd))
    report = write_report(summary, teacher_eval, student_eval, choice.row, trained, teacher, store_uri)
    say(11, report.markdown)
    return completed(spec, summary, report, made)


# --- set-up ------------------------------------------------------------------------------------


def open_store(spec: DistillSpec) -> ArtifactStore:
    """The run's artifact store: the named block, else the URI, else the local default."""
    if spec.storage.block:
        return ArtifactStoreBlock.load(spec.storage.block).store()
    return from_uri(spec.storage.uri) if spec.storage.uri else LocalStore(stratos_home() / "artifacts")


def dataset_ref(task: TaskSpec) -> FileRef | None:
    """The user's dataset file (or folder) with its content hash; None for generated or vendored data."""
    return FileRef.of(task.dataset) if task.dataset and Path(task.dataset).expanduser().exists() else None


def catalog_refs(servers: ServerSettings) -> list[FileRef]:
    return [FileRef.of(p) for p in servers.catalog_paths()]


# --- stages 3-5: the constraint loop ------------------------------------------------------------


def constraint_loop(
    spec: DistillSpec, models: dict[str, ResolvedModel], data: PreparedData, store_uri: str
) -> LoopOutcome:
    """Server -> teacher -> student, relaxing by spec.relax until a student passes (flows/loop.py)."""
    calls: Counter[str] = Counter()
    probe = data.splits["probe"]

    def named(stage):  # each iteration's task runs are select-server-0, select-server-1, ...
        calls[stage.name] += 1
        return stage.with_options(task_run_name=f"{stage.name}-{calls[stage.name] - 1}")

    def server(s: DistillSpec) -> ServerChoice:
        return named(select_server)(
            s.constraints, s.servers, catalog_refs(s.servers), store_uri, job_profile(s)
        )

    def teacher(s: DistillSpec, choice: ServerChoice) -> TeacherChoice:
        teachers, budget = [models[t.name] for t in s.teachers], run_budget(s, choice, store_uri)
        return named(probe_teachers)(
            teachers, s.task, probe, choice.row, s.constraints.budget_usd, s.strategy, store_uri, budget
        )

    def student(s: DistillSpec, choice: ServerChoice, teacher_choice: TeacherChoice):
        assert teacher_choice.chosen is not None
        return named(prescreen_students)(
            [models[c.name] for c in s.students],
            models[teacher_choice.chosen],
            teacher_choice,
            s.task,
            probe,
            choice.row,
            fit_constraints(s.constraints),
            fit_settings(s.training),
            s.strategy,
            run_budget(s, choice, store_uri),
        )

    sizes = sorted({m.params for m in models.values() if m.role == "student" and m.params})
    approve = ask_in_ui if spec.relax.approval == "ui" else as_declared
    return run_constraint_loop(spec, server, teacher, student, sizes, approve)


__all__ = ["distill", "DistillResult"]
