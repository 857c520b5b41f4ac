"""The `distill` flow: one DistillSpec in, a distilled, evaluated and served student out.

Read top to bottom it is the pipeline of SPEC.md:

    prepare data -> select server -> select teacher -> pre-screen students
      (no student passes? relax the constraints by policy and loop back)
    -> choose strategy -> synthesize -> train -> evaluate -> deploy -> report

Every stage is a Prefect task whose cache key is its inputs (spec sections,
dataset and model content hashes, artifact URIs that are themselves named by
content) plus the task's source, with persisted results: an identical second
run is served from the cache, and a changed training setting re-runs training
and what follows only. The deployment is checked against the live endpoint
before its cached record is trusted. GPU stages go through flows/dispatch.py:
in-process by default, on the chosen server's Prefect worker when one is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from flows.dispatch import Dispatcher, NoLiveWorker, WorkerLost, placements
from flows.result import DistillResult, report_markdown, write_report_artifacts
from stratos.files import content_digest
from stratos.spec import DistillSpec, ModelCandidate, SpecError
from stratos.storage import ArtifactStore, LocalStore, from_uri, stratos_home

log = logging.getLogger(__name__)

CONTENT = INPUTS + TASK_SOURCE  # inputs identify content: hashes and content-named URIs
STAGE_CACHE = (INPUTS - "dispatcher") + TASK_SOURCE  # where a stage runs does not change what it makes
# The training settings a student's fit depends on; a new learning rate must not re-run the pre-screen.
FIT_FIELDS = {"method", "max_seq_length", "per_device_train_batch_size", "lora_r"}


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts: the key that names a stage's artifacts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def sources_digest(paths: list[Any]) -> str:
    """Content hash of the input files a stage reads (a dataset, catalogs): an edit in place re-runs it."""
    from pathlib import Path

    found = [Path(p).expanduser() for p in paths if p and Path(p).expanduser().exists()]
    return digest([(str(p), content_digest(p)) for p in found])


def transient(task, task_run, state) -> bool:
    """Retry lost workers and network trouble; a deterministic error would only fail again."""
    try:
        state.result()
    except (WorkerLost, ConnectionError, TimeoutError, OSError) as err:
        return not isinstance(err, FileNotFoundError | PermissionError)
    except Exception:
        return False
    return False


def say(message: str) -> None:
    """Progress for the person watching: the run's log (terminal and Prefect UI)."""
    from prefect import get_run_logger

    get_run_logger().info(message)


# --- set-up ---------------------------------------------------------------------------------


def check_runnable(spec: DistillSpec) -> None:
    """What every run needs beyond a valid spec; fails before anything expensive starts."""
    if spec.task is None:
        raise SpecError(
            "spec field 'task' is required for a distillation run; add a task section (domain, ...)"
        )
    if not spec.teachers:
        raise SpecError("spec field 'teachers' is empty; add at least one teacher candidate")
    if not spec.students:
        raise SpecError("spec field 'students' is empty; add at least one student candidate")


def open_store(spec: DistillSpec) -> ArtifactStore:
    """The run's artifact store: the named block, else the URI, else the local default."""
    if spec.storage.block:
        from blocks.storage import ArtifactStoreBlock

        return ArtifactStoreBlock.load(spec.storage.block).store()
    return from_uri(spec.storage.uri) if spec.storage.uri else LocalStore(stratos_home() / "artifacts")


@task(name="prepare-data", task_run_name="prepare-data", cache_policy=CONTENT, persist_result=True)
def prepare_data_stage(task_spec: dict[str, Any], store_uri: str, sources: str) -> dict[str, Any]:
    """Draw the splits and publish them as data/<hash>/{train,probe,test}.parquet."""
    from flows.stages import work_dir
    from stratos.spec import TaskSpec
    from tasks.prepare_data import prepare_data

    key = digest(task_spec)
    prepared = prepare_data(TaskSpec.model_validate(task_spec), work_dir("data", key))
    art = from_uri(store_uri).put_dir(f"data/{prepared.sha256[:20]}", work_dir("data", key))
    return {"uri": art.uri, "sha256": prepared.sha256,
            "splits": {n: {"uri": f"{art.uri}/{n}.parquet", "size": s.size, "sha256": s.sha256}
                       for n, s in prepared.splits.items()}}  # fmt: skip


@task(name="resolve-models", task_run_name="resolve-models", cache_policy=NO_CACHE)
def resolve_models(spec: DistillSpec) -> dict[str, dict[str, Any]]:
    """Every candidate with a local path (zoo models built on first use) and its content hash."""
    from pathlib import Path

    from stratos import zoo
    from stratos.domains import get_domain

    assert spec.task is not None
    domain = get_domain(spec.task)
    out = {}
    for role, group in (("teacher", spec.teachers), ("student", spec.students)):
        for cand in group:
            model = zoo.resolve(cand.model, domain, spec.task.seed) if cand.kind == "hf" else cand.model
            local = Path(model).expanduser()
            sha = (
                content_digest(local) if local.exists() else f"id:{model}"
            )  # a hub id or endpoint names itself
            out[cand.name] = {"role": role, "candidate": cand.model_copy(update={"model": model}).model_dump(),
                              "sha256": sha}  # fmt: skip
    return out


# --- the constraint loop: select server -> teacher -> student, relax and loop back ------------------


@task(name="select-server", task_run_name="select-server", cache_policy=CONTENT, persist_result=True)
def select_server_stage(constraints: dict[str, Any], servers: dict[str, Any], sources: str):
    from stratos.spec import Constraints, ServerSettings
    from tasks.catalog import load_catalogs
    from tasks.select_server import select_server

    settings = ServerSettings.model_validate(servers)
    table = load_catalogs(settings.catalog_paths())[0]
    return select_server(table, Constraints.model_validate(constraints), settings, with_baselines=True)


@task(name="select-teacher", task_run_name="select-teacher", cache_policy=CONTENT, persist_result=True)
def select_teacher_stage(teachers: list[dict[str, Any]], shas: list[str], task_spec: dict[str, Any],
                         probe_uri: str, budget_usd: float, generations: int, memory_gib: float,
                         price_per_hour: float, max_new_tokens: int):  # fmt: skip
    """Probe every teacher (shas: their content, so a retrained teacher is probed again)."""
    from stratos.backends.factory import from_candidate
    from stratos.domains import get_domain
    from stratos.spec import TaskSpec
    from stratos.storage import fetch
    from tasks.prepare_data import load_examples
    from tasks.select_teacher import select_teacher

    cands = [ModelCandidate.model_validate(t) for t in teachers]
    backends = {c.name: from_candidate(c) for c in cands}
    return select_teacher(cands, backends, get_domain(TaskSpec.model_validate(task_spec)),
                          load_examples(fetch(probe_uri)), budget_usd, generations, memory_gib,
                          price_per_hour, max_new_tokens)  # fmt: skip


@task(
    name="prescreen-students", task_run_name="prescreen-students", cache_policy=CONTENT, persist_result=True
)
def prescreen_stage(students: list[dict[str, Any]], shas: list[str], teacher: dict[str, Any], teacher_sha: str,
                    teacher_probe: Any, task_spec: dict[str, Any], probe_uri: str, server: dict[str, Any],
                    constraints: dict[str, Any], training: dict[str, Any], strategy: dict[str, Any]):  # fmt: skip
    """Fit every student to the server and pre-screen those that fit with teacher-written demos."""
    import pandas as pd

    from stratos.backends.factory import from_candidate
    from stratos.domains import get_domain
    from stratos.spec import Constraints, StrategySettings, TaskSpec, TrainingSettings
    from stratos.storage import fetch
    from tasks.prepare_data import load_examples
    from tasks.select_student import make_demos, select_student

    s = StrategySettings.model_validate(strategy)
    domain = get_domain(TaskSpec.model_validate(task_spec))
    probe = load_examples(fetch(probe_uri))
    demos = make_demos(from_candidate(ModelCandidate.model_validate(teacher)), domain, probe, teacher_probe,
                       s.prescreen_demos, s.max_new_tokens)  # fmt: skip
    cands = [ModelCandidate.model_validate(c) for c in students]
    backends = {c.name: from_candidate(c) for c in cands}
    return select_student(cands, backends, domain, pd.Series(server), Constraints.model_validate(constraints),
                          TrainingSettings.model_validate(training), probe[: s.prescreen_size], demos,
                          s.prescreen_threshold, s.max_new_tokens)  # fmt: skip


def constraint_loop(spec: DistillSpec, models: dict[str, dict[str, Any]], data: dict[str, Any]):
    """Server -> teacher -> student, relaxing by spec.relax until a student passes (tasks/relax.py)."""
    from tasks.relax import run_constraint_loop
    from tasks.select_teacher import planned_questions

    assert spec.task is not None
    calls = {"server": 0, "teacher": 0, "student": 0}
    probe_uri = data["splits"]["probe"]["uri"]

    def named(stage, which):
        calls[which] += 1
        return stage.with_options(task_run_name=f"{stage.name}-{calls[which] - 1}")

    def server(s: DistillSpec):
        return named(select_server_stage, "server")(
            s.constraints.model_dump(), s.servers.model_dump(), sources_digest(s.servers.catalog_paths())
        )

    def teacher(s: DistillSpec, selection):
        row = selection.row(selection.chosen)
        teachers = [models[t.name] for t in s.teachers]
        generations = planned_questions(s.task.train_size, s.strategy.num_samples, s.strategy.max_attempts)
        return named(select_teacher_stage, "teacher")(
            [t["candidate"] for t in teachers], [t["sha256"] for t in teachers], s.task.model_dump(), probe_uri,
            s.constraints.budget_usd, generations, float(row["total_gpu_memory_gb"]),
            float(row["cost_per_hour"]), s.strategy.max_new_tokens,
        )  # fmt: skip

    def student(s: DistillSpec, selection, teacher_choice):
        students = [models[c.name] for c in s.students]
        chosen = models[teacher_choice.chosen]
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in selection.row(selection.chosen).items()}
        return named(prescreen_stage, "student")(
            [c["candidate"] for c in students], [c["sha256"] for c in students], chosen["candidate"],
            chosen["sha256"], teacher_choice.probe, s.task.model_dump(), probe_uri, row,
            s.constraints.model_dump(), s.training.model_dump(include=FIT_FIELDS), s.strategy.model_dump(),
        )  # fmt: skip

    return run_constraint_loop(spec, server, teacher, student, sorted(_student_sizes(models)))


def _student_sizes(models: dict[str, dict[str, Any]]) -> set[int]:
    """Parameter counts of the local student candidates (what `larger_student` steps through)."""
    from tasks.select_student import student_params

    sizes = set()
    for m in models.values():
        if m["role"] == "student":
            params = student_params(ModelCandidate.model_validate(m["candidate"]))
            if params:
                sizes.add(params)
    return sizes


# --- strategy, then the GPU stages -------------------------------------------------------------


@task(name="choose-strategy", task_run_name="choose-strategy", cache_policy=CONTENT, persist_result=True)
def choose_strategy(teacher_accuracy: float, tau: float, force: str | None) -> dict[str, str]:
    from tasks.synthesize import choose_mode

    mode, reason = choose_mode(teacher_accuracy, tau, force)  # type: ignore[arg-type]
    return {"mode": mode, "reason": reason}


@task(name="synthesize", task_run_name="synthesize", cache_policy=STAGE_CACHE, persist_result=True, retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient)  # fmt: skip
def synthesize_task(args: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    return dispatcher.run("synthesize", args)


@task(name="train", task_run_name="train", cache_policy=STAGE_CACHE, persist_result=True, retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient)  # fmt: skip
def train_task(args: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    return dispatcher.run("train", args)


@task(name="evaluate", task_run_name="evaluate", cache_policy=STAGE_CACHE, persist_result=True, retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient)  # fmt: skip
def evaluate_task(args: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    return dispatcher.run("evaluate", args)


@task(name="deploy", task_run_name="deploy", cache_policy=STAGE_CACHE, persist_result=True, retries=1, retry_delay_seconds=2,
      retry_condition_fn=transient)  # fmt: skip
def deploy_task(args: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    return dispatcher.run("deploy", args)


@task(name="report", task_run_name="report", cache_policy=CONTENT, persist_result=True)
def report_stage(store_uri: str, key: str, summary: dict[str, Any], teacher_eval_uri: str, student_eval_uri: str,
                 server: dict[str, Any], train_meta_uri: str, student_model_uri: str,
                 teacher_model: str) -> dict[str, Any]:  # fmt: skip
    """Teacher vs student with scores and costs, plus the run's choices; published as reports/<key>/."""
    from stratos.storage import fetch
    from tasks.evaluate import EvalResult
    from tasks.report import build_report

    store = from_uri(store_uri)
    evals = {n: EvalResult.from_dict(json.loads(fetch(u).read_text()))
             for n, u in (("teacher", teacher_eval_uri), ("student", student_eval_uri))}  # fmt: skip
    meta = json.loads(fetch(train_meta_uri).read_text())
    report = build_report(
        evals["student"], evals["teacher"], server, meta, fetch(student_model_uri), teacher_model
    )
    report["run"] = summary
    markdown = report_markdown(report)
    store.put_json(f"reports/{key}/report.json", report)
    art = store.put_bytes(f"reports/{key}/report.md", markdown.encode())
    return {"report": report, "markdown": markdown, "markdown_uri": art.uri}


# --- the flow ----------------------------------------------------------------------------------


@flow(name="distill", persist_result=True)
def distill(spec: DistillSpec) -> DistillResult:
    """Distil a teacher into a student for spec.task under spec.constraints, deploy it, and report."""
    check_runnable(spec)
    assert spec.task is not None
    store = open_store(spec)
    store_uri = store.uri_for("")
    say(f"[1/9] preparing data for '{spec.task.domain}' in {store_uri}")
    data = prepare_data_stage(spec.task.model_dump(), store_uri, sources_digest([spec.task.dataset]))
    say("[2/9] resolving teacher and student models (zoo models are built on first use)")
    models = resolve_models(spec)

    say("[3/9] selecting server, teacher and student (relaxing constraints if none passes)")
    loop = constraint_loop(spec, models, data)
    say(loop.report())
    if not loop.feasible:
        result = DistillResult.infeasible(spec, loop)
        write_report_artifacts(result, None, None)
        return result
    spec = loop.spec  # the relaxed spec the winning iteration ran with
    selection, teacher, student = loop.selection, loop.teacher, loop.student
    server_row = {
        k: (v.item() if hasattr(v, "item") else v) for k, v in selection.row(selection.chosen).items()
    }
    dispatcher = Dispatcher(
        placements(selection.front_ranked(), selection.servers, spec.workers), spec.workers
    )

    strategy = choose_strategy(teacher.accuracy, spec.strategy.tau, spec.strategy.force_mode)
    say(f"[4/9] strategy: {strategy['reason']}")
    t_model, s_model = models[teacher.chosen], models[student.chosen]
    task_dict = spec.task.model_dump()
    synth_args = {"task": task_dict, "teacher": t_model["candidate"], "train_uri": data["splits"]["train"]["uri"],
                  "mode": strategy["mode"], "strategy": spec.strategy.model_dump()}  # fmt: skip
    synth_key = digest("synthesize", synth_args, t_model["sha256"], data["sha256"])
    say(f"[5/9] synthesizing training data with {teacher.chosen} ({strategy['mode']})")
    synth = synthesize_task({**synth_args, "store_uri": store_uri, "key": synth_key}, dispatcher)

    method = next(f.method for f in student.fits if f.name == student.chosen)
    train_args = {"task": task_dict, "base_model": s_model["candidate"]["model"], "synthesis_uri": synth["uri"],
                  "training": spec.training.model_dump(), "method": method, "seed": spec.task.seed}  # fmt: skip
    train_key = digest("train", train_args, s_model["sha256"], synth["train_sha256"])
    say(f"[6/9] training {student.chosen} ({method}) on {synth['report']['accepted']} examples")
    trained = train_task({**train_args, "store_uri": store_uri, "key": train_key}, dispatcher)

    say("[7/9] evaluating teacher and student on the held-out split")
    test_uri = data["splits"]["test"]["uri"]
    student_cand = {**s_model["candidate"], "model": trained["model_uri"]}
    evals = {}
    for role, cand, sha in (("teacher", t_model["candidate"], t_model["sha256"]),
                            ("student", student_cand, trained["model_sha256"])):  # fmt: skip
        args = {"task": task_dict, "model": cand, "test_uri": test_uri,
                "max_new_tokens": spec.strategy.max_new_tokens}  # fmt: skip
        key = digest("evaluate", args, sha, data["sha256"])
        evals[role] = evaluate_task.with_options(task_run_name=f"evaluate-{role}")(
            {**args, "store_uri": store_uri, "key": key}, dispatcher
        )

    endpoint = None
    if spec.deploy.enabled:
        say("[8/9] deploying the student (health, smoke and parity checks)")
        endpoint = deploy(spec, store_uri, task_dict, trained, evals["student"], test_uri, dispatcher)
    else:
        say("[8/9] deployment disabled (deploy.enabled = false)")

    summary = DistillResult.summary(spec, loop, strategy, synth, trained, evals, endpoint, dispatcher)
    say("[9/9] writing the report")
    report = report_stage(store_uri, digest("report", summary), summary, evals["teacher"]["uri"],
                          evals["student"]["uri"], server_row, trained["meta_uri"], trained["model_uri"],
                          t_model["candidate"]["model"])  # fmt: skip
    result = DistillResult.completed(spec, summary, report, data, synth, trained, evals, endpoint)
    write_report_artifacts(result, selection, report["markdown"])
    say(report["markdown"])
    return result


def deploy(spec: DistillSpec, store_uri: str, task_dict: dict[str, Any], trained: dict[str, Any],
           student_eval: dict[str, Any], test_uri: str, dispatcher: Dispatcher) -> dict[str, Any]:  # fmt: skip
    """Serve the student; a cached endpoint record is reused only while that endpoint still answers."""
    from tasks.deploy import find_running

    args = {"task": task_dict, "model_uri": trained["model_uri"], "model_sha256": trained["model_sha256"],
            "served_model_name": spec.name, "server_id": dispatcher.current, "test_uri": test_uri,
            "evaluation_uri": student_eval["uri"], "deploy": spec.deploy.model_dump(),
            "max_new_tokens": spec.strategy.max_new_tokens}  # fmt: skip
    alive = find_running(trained["model_sha256"], spec.name) is not None
    return deploy_task.with_options(refresh_cache=not alive)(
        {**args, "store_uri": store_uri, "key": digest("deploy", args)}, dispatcher
    )


__all__ = ["distill", "DistillResult", "NoLiveWorker"]
