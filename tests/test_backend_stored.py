"""Replaying recorded completions: a file recorded from a real model replays exactly; gaps are errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratos.backends.base import SamplingParams
from stratos.backends.factory import from_candidate
from stratos.backends.hf import HFBackend
from stratos.backends.stored import StoredBackend, UnknownPromptError
from stratos.spec import ModelCandidate


def _write(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def recorded(tiny_model_dir, tiny_domain, tmp_path_factory):
    """Questions, the prompts the domain builds for them, a file recorded from a real model, its outputs."""
    questions = [ex.question for ex in tiny_domain.load("test", 5, seed=1)]
    prompts = [tiny_domain.messages(q) for q in questions]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=3)
    outputs = HFBackend(tiny_model_dir).generate(prompts, params)
    path = tmp_path_factory.mktemp("stored") / "teacher.jsonl"
    rows = [
        {
            "prompt": p,
            "completion": c.text,
            "completion_tokens": c.completion_tokens,
            "latency_s": c.latency_s,
        }
        for p, samples in zip(prompts, outputs, strict=True)
        for c in samples
    ]
    return questions, prompts, _write(path, rows), outputs


def test_replays_a_recorded_file_exactly(recorded):
    _, prompts, path, outputs = recorded
    backend = StoredBackend(path)
    replay = backend.generate(prompts, SamplingParams(n=2))
    assert [[c.text for c in s] for s in replay] == [[c.text for c in s] for s in outputs]
    assert backend.usage.completion_tokens == sum(c.completion_tokens for s in outputs for c in s)
    assert replay[0][0].latency_s == pytest.approx(outputs[0][0].latency_s)
    # More samples than were recorded cycle through them, from the first, on every call.
    cycled = backend.generate(prompts[:1], SamplingParams(n=5))[0]
    assert [c.text for c in cycled] == [c.text for c in outputs[0]] * 2 + [outputs[0][0].text]


def test_matches_raw_questions_inside_a_prompt_template(tmp_path, tiny_domain):
    path = _write(
        tmp_path / "log.jsonl",
        [
            {"question": "What is 2 + 3?", "completion": "#### 5"},
            {"question": "What is 12 + 3?", "completion": "#### 15"},
            {"question": "3?", "completion": "#### wrong"},  # the end of both questions: must never match
        ],
    )
    backend = StoredBackend(path)
    prompts = [tiny_domain.messages("What is 12 + 3?"), tiny_domain.injection_messages("What is 2 + 3?", "5")]
    assert [s[0].text for s in backend.generate(prompts, SamplingParams())] == ["#### 15", "#### 5"]
    wrapped = [{"role": "user", "content": "Solve this:\nWhat is 2 + 3?\nThink step by step."}]
    assert backend.generate([wrapped], SamplingParams())[0][0].text == "#### 5"
    with pytest.raises(UnknownPromptError):  # 'What is 2 + 3?' is inside, but not on its own line
        backend.generate([tiny_domain.messages("So, What is 2 + 3?")], SamplingParams())


def test_unknown_prompt_is_an_error_naming_prompt_and_file(recorded, tiny_domain):
    path = recorded[2]
    with pytest.raises(UnknownPromptError) as raised:
        StoredBackend(path).generate([tiny_domain.messages("What is 1 + 1? " * 20)], SamplingParams())
    message = str(raised.value)
    assert "What is 1 + 1?" in message and str(path) in message and "..." in message
    assert len(message) < 400  # the prompt is shown truncated


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2 is not valid JSON"),
        ('["a list"]', "line 2 is a JSON list"),
        ('{"prompt": "p"}', "line 2: 'completion' must be a string"),
        ('{"completion": "c"}', "line 2 has neither 'prompt' nor 'question'"),
        ('{"prompt": 3, "completion": "c"}', "line 2: 'prompt' must be a string"),
        ('{"prompt": [{"role": "system", "content": "s"}], "completion": "c"}', "no user message"),
        ('{"question": "q", "completion": "c", "latency_s": "fast"}', "line 2: 'latency_s' must be a number"),
    ],
)
def test_bad_lines_are_reported_with_their_number(tmp_path, line, expected):
    path = _write(tmp_path / "bad.jsonl", [{"question": "ok", "completion": "fine"}, line])
    with pytest.raises(ValueError, match=expected) as raised:
        StoredBackend(path)
    assert str(path) in str(raised.value)


def test_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StoredBackend(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="no records"):
        StoredBackend(_write(tmp_path / "empty.jsonl", ["", "  "]))


def test_built_from_a_spec_candidate(recorded):
    _, prompts, path, outputs = recorded
    backend = from_candidate(ModelCandidate(name="prod-logs", kind="stored", model=str(path)))
    assert backend.name == "prod-logs"
    assert backend.generate(prompts[:1], SamplingParams())[0][0].text == outputs[0][0].text
