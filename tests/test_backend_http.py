"""The OpenAI-compatible HTTP backend against the real serving app on loopback.

The server is stratos.serving.openai_server serving a tiny trained model; a thin
ASGI layer in front of it (`Faults`) lets a test fail, stall or alter the next
request on the wire, so retries are exercised against real HTTP, not mocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.responses import JSONResponse

from stratos.backends.base import SamplingParams
from stratos.backends.factory import from_candidate
from stratos.backends.hf import HFBackend
from stratos.backends.openai_http import BackendError, OpenAIBackend
from stratos.evaluation import evaluate
from stratos.serving.openai_server import Batcher, create_app, main
from stratos.spec import ModelCandidate

SERVED = "tiny"
PROMPTS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 12 and 30."}],
    [{"role": "user", "content": "Count to five."}],
    [{"role": "user", "content": "Say hello"}],
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


class Faults:
    """ASGI layer in front of the real app: counts chat requests and misbehaves on demand."""

    def __init__(self, app):
        self.app = app
        self.reset()

    def reset(self) -> None:
        self.plan: list[str] = []  # one action per coming chat request: "500", "429", "stall"
        self.stall_s = 0.0
        self.ignore_n = False  # behave like a server that only ever returns one choice
        self.hits = 0
        self.auth: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        self.hits += 1
        self.auth.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        action = self.plan.pop(0) if self.plan else None
        if action in ("500", "429"):
            body = {"error": {"message": "injected failure", "type": "server_error"}}
            return await JSONResponse(body, status_code=int(action))(scope, receive, send)
        if action == "stall":
            await asyncio.sleep(self.stall_s)
        if self.ignore_n:
            receive = await _with_n_one(receive)
        return await self.app(scope, receive, send)


async def _with_n_one(receive):
    """A receive channel replaying the request body with n forced to 1."""
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.loads(b"".join(chunks))
    body["n"] = 1
    replay = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def patched():
        return replay.pop() if replay else await receive()

    return patched


class LoopbackServer:
    """uvicorn on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"


@pytest.fixture(scope="module")
def served(tiny_trained_model_dir):
    faults = Faults(create_app(tiny_trained_model_dir, SERVED))
    with LoopbackServer(faults) as server:
        yield server.url, faults


@pytest.fixture
def faults(served) -> Faults:
    served[1].reset()
    return served[1]


@pytest.fixture
def url(served, faults) -> str:
    return served[0] + "/v1"


@pytest.fixture(scope="module")
def local(tiny_trained_model_dir) -> HFBackend:
    return HFBackend(tiny_trained_model_dir, name=SERVED)


def test_greedy_completions_match_local_backend_and_usage_is_priced(url, faults, local):
    backend = OpenAIBackend(url, SERVED, price_per_1k_input=1.0, price_per_1k_output=2.0, backoff_s=0.01)
    remote = backend.generate(PROMPTS, GREEDY)
    direct = local.generate(PROMPTS, GREEDY)
    assert len({s[0].text for s in direct}) > 1  # prompt-dependent text, so equality means something
    assert [[c.text for c in s] for s in remote] == [[c.text for c in s] for s in direct]
    assert [s[0].prompt_tokens for s in remote] == [s[0].prompt_tokens for s in direct]
    assert [s[0].finish_reason for s in remote] == [s[0].finish_reason for s in direct]
    assert [s[0].completion_tokens for s in remote] == [s[0].completion_tokens for s in direct]
    assert all(s[0].latency_s > 0 for s in remote)
    u = backend.usage
    assert u.requests == faults.hits == len(PROMPTS)
    assert u.prompt_tokens == sum(s[0].prompt_tokens for s in direct) > 0
    assert u.completion_tokens == sum(s[0].completion_tokens for s in direct) > 0
    assert u.cost_usd == pytest.approx(u.prompt_tokens / 1000 * 1.0 + u.completion_tokens / 1000 * 2.0)
    assert u.seconds > 0 and backend.retries == 0


def test_n_samples_in_one_request_or_several_when_server_ignores_n(url, faults):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=7)
    backend = OpenAIBackend(url, SERVED)
    out = backend.generate(PROMPTS[:2], params)
    assert [len(s) for s in out] == [3, 3] and backend.usage.requests == 2

    faults.reset()
    faults.ignore_n = True
    backend = OpenAIBackend(url, SERVED)
    out = backend.generate(PROMPTS[:2], params)
    assert [len(s) for s in out] == [3, 3]
    assert backend.usage.requests == faults.hits == 6


@pytest.mark.parametrize("status", ["500", "429"])
def test_retries_after_server_error(url, faults, status):
    faults.plan = [status]
    backend = OpenAIBackend(url, SERVED, backoff_s=0.01, max_concurrency=1)
    out = backend.generate(PROMPTS[:1], GREEDY)
    assert out[0][0].completion_tokens > 0
    assert backend.retries == 1 and faults.hits == 2 and backend.usage.requests == 1


def test_retries_after_timeout(url, faults):
    faults.plan, faults.stall_s = ["stall"], 2.5
    backend = OpenAIBackend(url, SERVED, timeout_s=1.5, backoff_s=0.01, max_concurrency=1)
    out = backend.generate(PROMPTS[:1], GREEDY)
    assert out[0][0].completion_tokens > 0
    assert backend.retries == 1 and faults.hits == 2


def test_client_errors_are_not_retried(url, faults):
    backend = OpenAIBackend(url, SERVED, backoff_s=0.01)
    with pytest.raises(BackendError, match="400.*temperature"):
        backend.generate(PROMPTS[:1], SamplingParams(temperature=-1.0))
    wrong_model = OpenAIBackend(url, "no-such-model", backoff_s=0.01)
    with pytest.raises(BackendError, match="404.*'no-such-model'"):
        wrong_model.generate(PROMPTS[:1], GREEDY)
    assert faults.hits == 2 and backend.retries == wrong_model.retries == 0


def test_unreachable_endpoint_fails_after_bounded_retries():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", SERVED, max_retries=2, backoff_s=0.01)
    with pytest.raises(BackendError, match="failed 3 times"):
        backend.generate(PROMPTS[:1], GREEDY)
    assert backend.retries == 2


def test_api_key_never_leaks(url, faults, monkeypatch, caplog):
    key = "sk-planted-0123456789abcdef"
    monkeypatch.setenv("STRATOS_TEST_KEY", key)
    candidate = ModelCandidate(
        name="t", kind="openai", model=SERVED, base_url=url, api_key_env="STRATOS_TEST_KEY"
    )
    caplog.set_level(logging.DEBUG)
    backend = from_candidate(candidate)
    backend.backoff_s = 0.01
    faults.plan = ["500"]  # the retry path logs a warning
    out = backend.generate(PROMPTS[:1], GREEDY)
    assert faults.auth == [f"Bearer {key}"] * 2  # the key did reach the server
    bad = OpenAIBackend(url, "no-such-model", api_key=SecretStr(key))
    with pytest.raises(BackendError) as raised:
        bad.generate(PROMPTS[:1], GREEDY)
    shown = [
        caplog.text,
        repr(backend),
        str(backend),
        repr(bad),
        str(raised.value),
        repr(raised.value),
        "".join(traceback.format_exception(raised.value)),
        repr(out),
        repr(vars(backend)),
    ]
    assert "retry 1/" in caplog.text
    assert not [text for text in shown if key in text]


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("STRATOS_ABSENT_KEY", raising=False)
    candidate = ModelCandidate(
        name="gpt",
        kind="openai",
        model="gpt-4o",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="STRATOS_ABSENT_KEY",
    )
    with pytest.raises(ValueError, match="'STRATOS_ABSENT_KEY', which is not set"):
        from_candidate(candidate)


def test_local_candidate_builds_the_hf_backend(tiny_model_dir):
    backend = from_candidate(ModelCandidate(name="student", kind="hf", model=str(tiny_model_dir)))
    assert isinstance(backend, HFBackend) and backend.name == "student"


def test_server_speaks_openai_errors_and_models(url, faults):
    models = httpx.get(f"{url}/models").json()
    assert [m["id"] for m in models["data"]] == [SERVED]
    bad = httpx.post(f"{url}/chat/completions", json={"model": SERVED, "messages": [], "top_p": 0.5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    stream = httpx.post(
        f"{url}/chat/completions", json={"model": SERVED, "messages": PROMPTS[0], "stream": True}
    )
    assert stream.status_code == 400 and "stream" in stream.json()["error"]["message"]


def test_evaluation_over_http_matches_local_backend(url, local, tiny_domain):
    examples = tiny_domain.load("test", 6, seed=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    priced = OpenAIBackend(url, SERVED, price_per_1k_input=0.5, price_per_1k_output=1.5)
    over_http = evaluate(priced, tiny_domain, examples, params)
    direct = evaluate(local, tiny_domain, examples, params)
    assert [r.completion for r in over_http.records] == [r.completion for r in direct.records]
    assert (over_http.n, over_http.accuracy) == (direct.n, direct.accuracy)
    assert over_http.completion_tokens == direct.completion_tokens > 0
    expected = over_http.prompt_tokens / 1000 * 0.5 + over_http.completion_tokens / 1000 * 1.5
    assert over_http.cost_usd == pytest.approx(expected) and over_http.cost_usd > 0


def test_batcher_groups_queued_requests_by_settings(local):
    calls: list[int] = []
    real = local.generate

    def counting(prompts, params):
        calls.append(len(prompts))
        return real(prompts, params)

    batcher = Batcher(local)
    batcher.backend = type("Counting", (), {"generate": staticmethod(counting)})()
    # Queued before the thread starts, as if they arrived while the model was busy.
    greedy = [batcher.submit(p, GREEDY) for p in PROMPTS]
    seeded = [
        batcher.submit(PROMPTS[0], SamplingParams(temperature=1.0, max_new_tokens=8, seed=s)) for s in (1, 1)
    ]
    batcher.start()
    try:
        texts = [f.result(timeout=30)[0].text for f in greedy]
        again = [f.result(timeout=30)[0].text for f in seeded]
    finally:
        batcher.stop()
    assert sorted(calls) == [1, 1, len(PROMPTS)]  # greedy together; each seeded request alone
    assert texts == [s[0].text for s in local.generate(PROMPTS, GREEDY)]
    assert again[0] == again[1]  # same seed, same text, whatever else was queued


def test_cli_serves_official_openai_client(tiny_trained_model_dir):
    openai = pytest.importorskip("openai")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "stratos.serving.openai_server", "--model", str(tiny_trained_model_dir)]
    cmd += ["--port", str(port), "--served-model-name", "cli-model", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="cli-model", messages=PROMPTS[0], max_tokens=8, temperature=0, n=2
        )
        assert len(reply.choices) == 2 and reply.usage.completion_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_cli_rejects_missing_model_dir(tmp_path):
    with pytest.raises(SystemExit, match="error: model path .* does not exist"):
        main(["--model", str(tmp_path / "nope")])


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"server at {url} not healthy after {timeout_s}s")
