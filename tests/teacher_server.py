"""A priced OpenAI-compatible teacher on loopback that answers arithmetic with the domain's own rationale.

It counts every request and reports exact `usage` (fixed token counts per request and per choice),
so a test can compare the ledger with what the endpoint says it served, and count the requests a
re-run makes. Stops however the test ends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from conftest import free_port
from fastapi import FastAPI, Request

from stratos.domains.arithmetic import solve
from stratos.domains.base import completion_text

PROMPT_TOKENS, COMPLETION_TOKENS = 100, 50  # per request, per choice


@dataclass
class Served:
    url: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompts: Counter[str] = field(default_factory=Counter)


def _answer(content: str) -> str:
    question = content.strip().splitlines()[0].strip()  # injection prompts give the answer below the question
    answer, rationale = solve(question)
    return completion_text(rationale, str(answer))


@contextmanager
def priced_teacher() -> Iterator[Served]:
    app, lock = FastAPI(), threading.Lock()
    port = free_port()
    served = Served(url=f"http://127.0.0.1:{port}/v1")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        n = int(body.get("n", 1))
        content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        with lock:
            served.requests += 1
            served.prompt_tokens += PROMPT_TOKENS
            served.completion_tokens += COMPLETION_TOKENS * n
            served.prompts[content] += 1
        text = _answer(content)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i in range(n)
        ]
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS * n}
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": choices,
            "usage": usage,
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "reference", "object": "model"}]}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the priced teacher did not start"
        time.sleep(0.05)
    try:
        yield served
    finally:
        server.should_exit = True
        thread.join(timeout=10)
