"""A small OpenAI-compatible server for a local model directory (the CPU serving path).

    python -m stratos.serving.openai_server --model DIR --port 8000 --served-model-name student

speaks the subset of the OpenAI API that Stratos and the official `openai`
client use: GET /health, GET /v1/models and POST /v1/chat/completions (messages,
n, temperature, top_p, max_tokens, stop, seed; no streaming), with errors in
OpenAI's {"error": {...}} shape. Generation goes through
stratos.backends.hf.HFBackend, so a served model answers exactly as it did in
evaluation.

The model is not thread-safe, so one thread runs it. Requests that arrive while
it is busy wait in a queue and the next pass generates all of them in one
batch: batching is where a small model's throughput on a CPU comes from (see
bench/generation.py), and under no load a request still starts at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field

from stratos.backends.base import Completion, Messages, SamplingParams
from stratos.backends.hf import HFBackend

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256  # OpenAI's default is "up to the context"; a tiny model rarely needs more
MAX_N = 64


class ChatMessage(BaseModel):
    role: str = Field(description="system, user or assistant")
    content: str


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request this server honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name for max_tokens
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False

    def sampling_params(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            stop=stop,
            seed=self.seed,
        )


@dataclass
class _Job:
    messages: Messages
    params: SamplingParams
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs the model on one thread, generating every queued request with equal settings in one batch."""

    def __init__(self, backend: HFBackend, max_batch: int = 64):
        self.backend = backend
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="stratos-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def submit(self, messages: Messages, params: SamplingParams) -> Future:
        job = _Job(messages, params)
        self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs = [job]
            # Whatever queued up while the model was busy is the next batch.
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                jobs.append(nxt)
            for group in _groups(jobs):
                self._run(group)

    def _run(self, group: list[_Job]) -> None:
        try:
            results = self.backend.generate([j.messages for j in group], group[0].params)
        except Exception as exc:  # the request fails, the server keeps serving
            log.exception("generation failed for a batch of %d requests", len(group))
            for job in group:
                job.future.set_exception(exc)
            return
        for job, completions in zip(group, results, strict=True):
            job.future.set_result(completions)


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that can share one generate() call: equal sampling settings, and no seed.

    A seeded request runs alone so that its seed gives the same text whatever
    other traffic the server has at the time.
    """
    groups: dict[tuple, list[_Job]] = {}
    for i, job in enumerate(jobs):
        key = (i,) if job.params.seed is not None else _hashable(astuple(job.params))
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def _hashable(values: tuple) -> tuple:
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def _error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    """An error body in OpenAI's shape, which clients (the openai package included) parse."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(status_code=status, content=body)


@dataclass
class Served:
    """What the routes need: the model's name and backend, its batcher and when it was loaded."""

    name: str
    model_dir: str
    backend: HFBackend
    batcher: Batcher
    context: int  # max positions; 0 when the config does not say
    created: int = field(default_factory=lambda: int(time.time()))


router = APIRouter()


def _served(request: Request) -> Served:
    return request.app.state.served


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "model": _served(request).name}


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    served = _served(request)
    card = {
        "id": served.name,
        "object": "model",
        "created": served.created,
        "owned_by": "stratos",
        "root": served.model_dir,
    }
    return {"object": "list", "data": [card]}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    served = _served(request)
    if body.model != served.name:
        return _error(
            404, f"model '{body.model}' does not exist; this server serves '{served.name}'", "model"
        )
    if body.stream:
        return _error(400, "stream=true is not supported by this server; send stream=false", "stream")
    params = body.sampling_params()
    if served.context and params.max_new_tokens > served.context:
        message = f"max_tokens={params.max_new_tokens} exceeds the model's context of {served.context}"
        return _error(400, message, "max_tokens")
    messages = [m.model_dump() for m in body.messages]
    try:
        completions = await asyncio.wrap_future(served.batcher.submit(messages, params))
    except TemplateError as exc:  # the chat template rejected the messages: the client's to fix
        return _error(400, f"the model's chat template rejected the messages: {exc}", "messages")
    except Exception as exc:
        return _error(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
    return _chat_response(served.name, completions)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 as OpenAI's 400, naming the parameter."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if p != "body")
    return _error(400, f"'{param}': {first['msg']} (got {first.get('input')!r})", param)


def create_app(model_dir: str | Path, served_model_name: str | None = None, max_batch: int = 64) -> FastAPI:
    """The server app for one model directory; the model loads now, so a bad directory fails here."""
    backend = HFBackend(model_dir, name=served_model_name)
    context = int(getattr(backend.model.config, "max_position_embeddings", 0) or 0)
    served = Served(backend.name, str(model_dir), backend, Batcher(backend, max_batch), context)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.batcher.start()
        log.info("serving '%s' from %s", served.name, served.model_dir)
        yield
        served.batcher.stop()

    app = FastAPI(title=f"Stratos OpenAI-compatible server: {served.name}", lifespan=lifespan)
    app.state.served = served
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(router)
    return app


def _chat_response(model: str, completions: list[Completion]) -> dict[str, Any]:
    prompt_tokens = completions[0].prompt_tokens if completions else 0
    completion_tokens = sum(c.completion_tokens for c in completions)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": c.finish_reason,
            "logprobs": None,
        }
        for i, c in enumerate(completions)
    ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description="Serve a local model directory over an OpenAI-compatible API."
    )
    parser.add_argument("--model", required=True, help="Model directory written by save_pretrained.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default: loopback only).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="Name clients send as 'model' (default: the directory name).",
    )
    parser.add_argument(
        "--max-batch", type=int, default=64, help="Most requests generated together in one batch."
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app(args.model, args.served_model_name, max_batch=args.max_batch)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
