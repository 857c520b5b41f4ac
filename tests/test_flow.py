"""The `distill` flow on the embedded default: a real Prefect run (ephemeral server), real models.

The tiny spec distils a recorded teacher (the domain's reference rationales,
replayed by the stored backend) into a random-init zoo "nano" student on
one-digit addition: every stage runs for real in seconds. Task run states are
read back from Prefect's API to show what was cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fit_worked_examples
from prefect_live import task_states

from stratos.domains import get_domain
from stratos.domains.base import completion_text
from stratos.spec import SpecError, TaskSpec

TASK = {"domain": "arithmetic", "options": {"digits": 1}, "train_size": 48, "probe_size": 16, "test_size": 24}


@pytest.fixture(scope="module")
def recorded_teacher(tmp_path_factory) -> Path:
    """A stored teacher: the domain's reference rationales for every question it can be asked."""
    domain = get_domain(TaskSpec(**TASK))
    rows = [
        {"question": ex.question, "completion": completion_text(ex.rationale, ex.answer)}
        for split, n in (("train", 400), ("test", 100))
        for ex in domain.load(split, n, 0)
    ]
    path = tmp_path_factory.mktemp("teacher") / "recorded.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def tiny_spec(teacher: Path, **sections) -> dict:
    spec = {
        "name": "tiny",
        "task": TASK,
        "constraints": {"region": "us-east", "budget_usd": 200, "max_latency_ms": 200},
        "teachers": [{"name": "recorded", "kind": "stored", "model": str(teacher)}],
        "students": [{"name": "nano", "model": "zoo:nano"}],
        "strategy": {"num_samples": 1, "max_new_tokens": 24, "prescreen_size": 8, "prescreen_demos": 1},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 3e-3},
        "serve": {"enabled": False},  # the deployed run is test_flow_deploys_the_student below
    }
    spec.update(sections)
    return spec


def run(spec: dict):
    """Run the flow; return its DistillResult and {task run name: final state name}."""
    from flows.distill import distill
    from stratos.spec import parse_spec

    state = distill(parse_spec(spec), return_state=True)
    return state.result(), task_states(state.state_details.flow_run_id)


COMPUTE = [
    "prepare-data",
    "select-server-0",
    "select-teacher-0",
    "prescreen-students-0",
    "choose-strategy",
    "synthesize",
    "train",
    "evaluate-teacher",
    "evaluate-student",
    "report",
]


def test_embedded_run_completes_then_is_cached_then_reruns_only_from_training(recorded_teacher):
    first, states = run(tiny_spec(recorded_teacher))
    assert first.status == "trained"
    assert first.choices["strategy"]["mode"] == "alignment"  # the recorded teacher is always right
    assert first.metrics["teacher_accuracy"] == 1.0
    assert first.metrics["synthesis"]["accepted"] == 48
    assert first.metrics["training"]["steps"] > 0 and first.metrics["training"]["loss_last"] is not None
    assert Path(first.artifacts["model"].removeprefix("file://"), "config.json").is_file()
    assert "Student vs teacher" in first.report_markdown
    assert all(states[name] == "Completed" for name in COMPUTE), states

    second, states = run(tiny_spec(recorded_teacher))
    assert all(states[name] == "Cached" for name in COMPUTE), states
    assert second.artifacts == first.artifacts and second.metrics == first.metrics

    changed = tiny_spec(
        recorded_teacher, training={**tiny_spec(recorded_teacher)["training"], "learning_rate": 1e-3}
    )
    third, states = run(changed)
    upstream = [
        "prepare-data",
        "select-server-0",
        "select-teacher-0",
        "prescreen-students-0",
        "choose-strategy",
        "synthesize",
        "evaluate-teacher",
    ]
    assert all(states[name] == "Cached" for name in upstream), {n: states[n] for n in upstream}
    assert all(states[name] == "Completed" for name in ("train", "evaluate-student", "report")), states
    assert third.artifacts["model"] != first.artifacts["model"]


def test_owner_tags_mark_the_flow_run_and_not_its_task_runs(recorded_teacher):
    # Tagged task runs each ask the server for concurrency slots under their tags (~0.1 s apiece).
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    from flows import run_flow
    from flows.server import RUN_TAG, owner_tags

    assert run_flow(tiny_spec(recorded_teacher)).status == "trained"
    with get_client(sync_client=True) as client:
        (last,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[RUN_TAG])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[last.id])))
    assert set(owner_tags()) <= set(last.tags)
    assert len(runs) >= len(COMPUTE) and all(not r.tags for r in runs), [(r.name, r.tags) for r in runs]


@pytest.fixture(scope="module")
def capable_student(tmp_path_factory) -> Path:
    """A micro model that has memorised the probe questions the pre-screen asks: a student with capacity."""
    from stratos import zoo
    from tasks.prepare_data import draw_splits

    task = TaskSpec(**TASK)
    domain = get_domain(task)
    base = zoo.random_model(domain, "micro")  # larger than the size cap the test sets
    probe = draw_splits(task)["probe"][:8]
    out = tmp_path_factory.mktemp("capable")
    # every step on all 8 probe questions
    return fit_worked_examples(base, domain, probe, out, steps=150, lr=2e-3, batch=len(probe))


def test_loop_back_relaxes_until_a_student_passes_prescreen(recorded_teacher, capable_student):
    from stratos.estimates import count_params, load_config

    nano_params = count_params(load_config(str(_zoo_nano())))
    spec = tiny_spec(
        recorded_teacher,
        students=[{"name": "nano", "model": "zoo:nano"}, {"name": "capable", "model": str(capable_student)}],
        constraints={**tiny_spec(recorded_teacher)["constraints"], "max_student_params": nano_params},
        strategy={**tiny_spec(recorded_teacher)["strategy"], "prescreen_threshold": 0.5},
        relax={"steps": [{"action": "higher_budget"}, {"action": "larger_student"}]},
    )
    result, states = run(spec)
    # Iteration 0 and 1 pre-screen only 'nano' (the cap keeps 'capable' out) and it fails; the second
    # relaxation admits the larger student, which passes at iteration 2.
    assert [states.get(f"prescreen-students-{i}") for i in range(3)] == ["Completed"] * 3
    assert [states.get(f"select-server-{i}") for i in range(3)] == ["Completed"] * 3
    iterations = result.loop["iterations"]
    assert [a["failed_stage"] for a in iterations] == ["student", "student", None]
    assert "larger_student" in result.loop["relaxations"][1]
    assert result.choices["student"]["name"] == "capable"
    assert result.status == "trained"


def _zoo_nano() -> Path:
    from stratos import zoo

    return zoo.random_model(get_domain(TaskSpec(**TASK)), "nano")


def test_impossible_spec_ends_in_the_infeasible_report(recorded_teacher):
    spec = tiny_spec(
        recorded_teacher,
        constraints={"region": "australia", "budget_usd": 2, "max_latency_ms": 5, "min_gpu_memory_gb": 4000},
        relax={"steps": [{"action": "higher_budget"}, {"action": "larger_server"}]},
    )
    result, states = run(spec)
    assert result.status == "infeasible"
    assert "INFEASIBLE" in result.loop["report"] and len(result.loop["iterations"]) == 3
    assert "synthesize" not in states and "train" not in states


def test_a_spec_without_task_or_candidates_fails_before_any_work():
    from flows import run_flow

    with pytest.raises(SpecError, match="'task' is required"):
        run_flow({"name": "x"})
    with pytest.raises(SpecError, match="'students' is empty"):
        run_flow({"task": TASK, "teachers": [{"name": "t", "kind": "stored", "model": "x.jsonl"}]})


@pytest.mark.integration
def test_cli_run_prints_the_result_as_json_and_rejects_a_bad_spec(recorded_teacher, tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(recorded_teacher)))
    cli = [sys.executable, "-m", "stratos.cli", "run"]
    done = subprocess.run(
        [*cli, str(spec), "--json"], capture_output=True, text=True, env=os.environ, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "trained" and result["metrics"]["teacher_accuracy"] == 1.0
    assert result["choices"]["strategy"]["mode"] == "alignment"

    spec.write_text(yaml.safe_dump({**tiny_spec(recorded_teacher), "trainign": {}}))
    bad = subprocess.run([*cli, str(spec)], capture_output=True, text=True, env=os.environ, timeout=120)
    assert bad.returncode == 2 and "did you mean 'training'" in bad.stderr

    # A wrong column in the user's own file fails in the preflight: before Prefect starts, one line.
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    task = {"domain": "custom", "dataset": str(data), "answer_column": "result", "train_size": 1}
    spec.write_text(yaml.safe_dump({**tiny_spec(recorded_teacher), "task": task}))
    bad = subprocess.run([*cli, str(spec)], capture_output=True, text=True, env=os.environ, timeout=120)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "task.answer_column = 'result' is not a column" in bad.stderr and "answer" in bad.stderr
    assert "Traceback" not in bad.stderr and "temporary server" not in bad.stderr


def test_flow_on_an_s3_store_over_http_keeps_a_planted_secret_out_of_everything(
    recorded_teacher, s3_endpoint, monkeypatch
):
    """Artifacts go to a real S3 server; the secret key is in no log, persisted result or stored object."""
    import os

    import boto3

    secret = "PLANTED-s3cr3t-9f1c2e"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stratos-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # boto3 reads it: workers need no code change
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="flow-artifacts")

    result, states = run(
        tiny_spec(recorded_teacher, name="s3-run", storage={"uri": "s3://flow-artifacts/runs"})
    )
    assert result.status == "trained"
    assert result.artifacts["model"].startswith("s3://flow-artifacts/runs/models/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="flow-artifacts")["Contents"]]
    assert any(k.endswith("model/model.safetensors") for k in keys) and any("/reports/" in k for k in keys)

    haystacks = [result.model_dump_json()]
    haystacks += [
        s3.get_object(Bucket="flow-artifacts", Key=k)["Body"].read().decode("latin-1") for k in keys
    ]
    for root in (
        os.environ["PREFECT_HOME"],
        os.environ["STRATOS_HOME"],
    ):  # Prefect's database (logs), results
        haystacks += [p.read_bytes().decode("latin-1") for p in Path(root).rglob("*") if p.is_file()]
    assert len(haystacks) > 20
    assert not [h for h in haystacks if secret in h]


def test_flow_deploys_the_student_and_reuses_the_endpoint_only_while_it_answers(recorded_teacher):
    from openai import OpenAI

    from tasks.serve import list_endpoints, stop_endpoint

    spec = tiny_spec(recorded_teacher, name="served", serve={"parity_size": 8})
    first, states = run(spec)
    assert first.status == "served" and states["serve"] == "Completed"
    endpoint = first.endpoint
    try:
        assert endpoint["parity"]["n"] == 8 and endpoint["smoke"]["text"]
        client = OpenAI(base_url=endpoint["url"], api_key="unused")
        reply = client.chat.completions.create(
            model="served", messages=[{"role": "user", "content": "3+4"}], max_tokens=8
        )
        assert reply.choices[0].message.content is not None
        assert "## Endpoint" in first.report_markdown and endpoint["id"] in first.report_markdown

        second, states = run(spec)  # the endpoint answers: its record is reused from the cache
        assert states["serve"] == "Cached" and second.endpoint["id"] == endpoint["id"]
    finally:
        stop_endpoint(endpoint["id"])
    third, states = run(spec)  # stopped: the cached record would lie, so the stage runs again
    try:
        assert states["serve"] == "Completed" and third.endpoint["id"] != endpoint["id"]
        assert [e.id for e in list_endpoints() if e.alive] == [third.endpoint["id"]]
    finally:
        stop_endpoint(third.endpoint["id"])
