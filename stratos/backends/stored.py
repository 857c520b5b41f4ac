"""Replay recorded teacher completions: distil from production logs instead of a live teacher.

The file is JSONL, one recorded answer per line:

    {"prompt": "<user message>" | [chat messages], "completion": "..."}
    {"question": "<raw question>", "completion": "..."}

optionally with "prompt_tokens", "completion_tokens" and "latency_s" as the
production system logged them (other keys are ignored). A prompt is matched by
its last user message: first exactly against recorded prompts, then against
recorded questions, which a domain's prompt template wraps; a question matches
when it fills whole lines of the message (as every built-in domain writes it),
so a recorded "2 + 3?" never answers a prompt about "12 + 3?". A question
therefore also answers that question's Knowledge Injection prompt; rejection
sampling against the gold answer then decides what is kept.

Several lines may record the same prompt; `n` samples cycle through them in
file order, starting from the first on every call, so a replay is repeatable.
A prompt with nothing recorded is an error: silently skipping it would bias
whatever is being measured or trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stratos.backends.base import Completion, Messages, SamplingParams, Usage


class UnknownPromptError(LookupError):
    """A prompt with no recorded completion."""


class StoredBackend:
    """A Backend whose completions come from a recorded JSONL file."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.usage = Usage()
        self._by_prompt: dict[str, list[dict[str, Any]]] = {}
        self._by_question: dict[str, list[dict[str, Any]]] = {}
        self._load()

    def __repr__(self) -> str:
        return f"StoredBackend(name={self.name!r}, path='{self.path}', prompts={len(self._by_prompt)}, questions={len(self._by_question)})"

    def _load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"stored completions file '{self.path}' does not exist; give a JSONL of "
                '{"prompt" or "question", "completion"} lines'
            )
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    self._add(_parse_line(line, number, self.path))
        if not self._by_prompt and not self._by_question:
            raise ValueError(f"stored completions file '{self.path}' has no records; it is empty")

    def _add(self, record: dict[str, Any]) -> None:
        if record.get("prompt") is not None:
            self._by_prompt.setdefault(record["prompt"], []).append(record)
        if record.get("question") is not None:
            self._by_question.setdefault(record["question"], []).append(record)

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, `params.n` recorded completions (cycling when fewer are recorded)."""
        start = time.perf_counter()
        results = []
        for messages in prompts:
            recorded = self._lookup(messages)
            results.append([_completion(recorded[i % len(recorded)]) for i in range(params.n)])
        self._account(results, time.perf_counter() - start)
        return results

    def _lookup(self, messages: Messages) -> list[dict[str, Any]]:
        content = _last_user_content(messages)
        if content in self._by_prompt:
            return self._by_prompt[content]
        # Longest first: of two recorded questions found in a prompt, the longer is the one asked.
        for question in sorted((q for q in self._by_question if q in content), key=len, reverse=True):
            if _on_own_lines(content, question):
                return self._by_question[question]
        shown = content if len(content) <= 80 else content[:77] + "..."
        raise UnknownPromptError(
            f"no completion recorded for prompt {shown!r} in '{self.path}' "
            f"({len(self._by_prompt)} prompts, {len(self._by_question)} questions recorded); "
            "record it, or evaluate on the questions the file covers"
        )

    def _account(self, results: list[list[Completion]], seconds: float) -> None:
        for samples in results:
            self.usage.requests += 1
            self.usage.prompt_tokens += samples[0].prompt_tokens if samples else 0
            self.usage.completion_tokens += sum(c.completion_tokens for c in samples)
        self.usage.seconds += seconds


def _parse_line(line: str, number: int, path: Path) -> dict[str, Any]:
    """One validated record; errors name the file and line."""
    where = f"'{path}' line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} is not valid JSON ({exc.msg}); each line must be one JSON object"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object")
    if not isinstance(record.get("completion"), str):
        raise ValueError(
            f"{where}: 'completion' must be a string, got {record.get('completion')!r}; add the recorded text"
        )
    prompt, question = record.get("prompt"), record.get("question")
    if prompt is None and question is None:
        raise ValueError(f"{where} has neither 'prompt' nor 'question'; add one to say what was asked")
    if isinstance(prompt, list):
        prompt = _last_user_content(prompt, where)
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(
            f"{where}: 'prompt' must be a string or a list of chat messages, got {type(prompt).__name__}"
        )
    if question is not None and not isinstance(question, str):
        raise ValueError(f"{where}: 'question' must be a string, got {type(question).__name__}")
    for key, kind in (("prompt_tokens", int), ("completion_tokens", int), ("latency_s", (int, float))):
        if key in record and not isinstance(record[key], kind):
            raise ValueError(f"{where}: '{key}' must be a number, got {record[key]!r}")
    return {**record, "prompt": prompt, "question": question}


def _last_user_content(messages: Any, where: str = "prompt") -> str:
    if not isinstance(messages, list):
        raise ValueError(
            f"{where}: messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    for message in reversed(messages):
        if (
            isinstance(message, dict)
            and message.get("role") == "user"
            and isinstance(message.get("content"), str)
        ):
            return message["content"]
    raise ValueError(f"{where}: the messages hold no user message with string content; add one")


def _on_own_lines(text: str, part: str) -> bool:
    """Whether `part` occurs in `text` starting and ending at line boundaries."""
    start = text.find(part)
    while start != -1:
        end = start + len(part)
        if (start == 0 or text[start - 1] == "\n") and (end == len(text) or text[end] == "\n"):
            return True
        start = text.find(part, start + 1)
    return False


def _completion(record: dict[str, Any]) -> Completion:
    return Completion(
        text=record["completion"],
        prompt_tokens=record.get("prompt_tokens", 0),
        completion_tokens=record.get("completion_tokens", 0),
        latency_s=float(record.get("latency_s", 0.0)),
    )
