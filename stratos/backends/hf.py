"""Local Hugging Face generation: batched, left-padded, chat-templated.

The same class loads a model the project built itself (a local path) or a hub
id when a user has network: both go through `from_pretrained`. Prompts are
rendered with the tokenizer's chat template, left-padded so every row of a
batch ends at the same position, and generated together; that batching is
where a small model's throughput comes from (see bench/generation.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from stratos.backends.base import Completion, Messages, SamplingParams, Usage

log = logging.getLogger(__name__)

# The prompt format of a model that has no chat template (a base model): system text, then
# "Question:" and "Answer:" turns, each answer closed by the end token. Training saves it with the
# trained model's tokenizer, so evaluation and serving render prompts exactly as training did. The
# generation prompt ends in a newline, which tokenizes on its own: the rendered prompt stays a
# token-level prefix of prompt + answer, as completion-only loss needs.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Answer:\\n' + message['content'] + eos_token + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:\\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Give a tokenizer without a chat template the plain format (PLAIN_CHAT_TEMPLATE), and say so."""
    if tokenizer.chat_template:
        return
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    log.warning(
        "model '%s' has no chat template (a base model?): using Stratos' plain 'Question:/Answer:' format "
        "in pre-screen, training, evaluation and serving",
        name,
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists() or model.count("/") > 1


def load_pretrained(
    model: str | Path, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a local directory or a hub id, with a clear error when neither loads."""
    source = str(Path(model).expanduser()) if isinstance(model, Path) else model
    if (isinstance(model, Path) or _looks_like_path(source)) and not Path(source).is_dir():
        raise FileNotFoundError(
            f"model path '{source}' does not exist; give a directory written by save_pretrained "
            "(e.g. one from stratos.zoo.random_model or train_teacher) or a Hugging Face hub id"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        net = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load model '{source}': {err}. Use a local directory with config.json and "
            "weights, or a hub id reachable from this machine (HF_HUB_OFFLINE=1 blocks the hub)"
        ) from err
    return net.to(device).eval(), tokenizer


class _StopOnStrings(StoppingCriteria):
    """Marks a row finished once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        # A byte-level token can be a fragment of one character, so look back far
        # enough to cover the longest stop string even at one byte per token.
        self.window = 4 * max(len(s) for s in stops) + 4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.window) :]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    """A local causal LM behind the Backend interface (stratos.backends.base)."""

    def __init__(
        self,
        model: str | Path,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        price_per_hour: float = 0.0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        net, tokenizer = load_pretrained(model, device)
        self._setup(net, tokenizer, name or Path(str(model)).name, device, batch_size, price_per_hour)

    @classmethod
    def from_loaded(
        cls,
        net: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str = "in-memory",
        batch_size: int = 32,
    ) -> HFBackend:
        """Wrap a model already in memory (e.g. one being trained) without saving it first."""
        self = cls.__new__(cls)
        self._setup(net, tokenizer, name, str(net.device), batch_size, 0.0)
        return self

    def _setup(
        self,
        net: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        device: str,
        batch_size: int,
        price_per_hour: float,
    ) -> None:
        ensure_chat_template(tokenizer, name)
        tokenizer.padding_side = "left"  # rows must end together so new tokens line up
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = net, tokenizer
        self.name, self.device, self.batch_size = name, device, batch_size
        self.price_per_hour = price_per_hour
        self.usage = Usage()
        eos = net.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = sorted({*eos_ids, tokenizer.eos_token_id} - {None})

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, `params.n` completions, generated in batches of `batch_size` rows."""
        if params.n < 1:
            raise ValueError(f"n must be at least 1, got {params.n}")
        texts = [
            self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts
        ]
        # Greedy decoding gives every sample the same text: generate once, copy n times
        # (usage counts the tokens actually generated, once).
        copies = 1 if params.temperature == 0 else params.n
        rows = [i for i in range(len(texts)) for _ in range(copies)]
        # Similar lengths in a batch waste less compute on padding; results go back in order.
        order = sorted(range(len(rows)), key=lambda r: len(texts[rows[r]]))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        results: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for r, completion in zip(
                chunk, self._generate_batch([texts[rows[r]] for r in chunk], params), strict=True
            ):
                results[rows[r]].append(completion)
        if copies == 1 and params.n > 1:
            results = [[c] + [Completion(**vars(c)) for _ in range(params.n - 1)] for [c] in results]
        self.usage.requests += len(prompts)
        return results

    @torch.inference_mode()
    def _generate_batch(self, texts: list[str], params: SamplingParams) -> list[Completion]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        prompt_len = enc["input_ids"].shape[1]
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        stopping = StoppingCriteriaList(
            [_StopOnStrings(self.tokenizer, params.stop, prompt_len)] if params.stop else []
        )
        started = time.perf_counter()
        out = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=stopping,
            **sampling,
        )
        seconds = time.perf_counter() - started
        completions = [
            self._completion(row[prompt_len:], int(mask.sum()), params, seconds)
            for row, mask in zip(out, enc["attention_mask"], strict=True)
        ]
        new_tokens = sum(c.completion_tokens for c in completions)
        self.usage.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.usage.completion_tokens += new_tokens
        self.usage.seconds += seconds
        self.usage.cost_usd += seconds / 3600 * self.price_per_hour
        log.debug(
            "%s: %d rows, %d new tokens in %.2fs (%.0f tok/s)",
            self.name,
            len(texts),
            new_tokens,
            seconds,
            new_tokens / max(seconds, 1e-9),
        )
        return completions

    def _completion(
        self, generated: torch.Tensor, prompt_tokens: int, params: SamplingParams, seconds: float
    ) -> Completion:
        ids = generated.tolist()
        # Rows that finished early (end token or stop string) are padded up to the
        # longest row; count only what this row generated, its end token included.
        pad = self.tokenizer.pad_token_id
        end = next((k for k, tok in enumerate(ids) if tok in self.eos_ids or tok == pad), len(ids))
        hit_eos = end < len(ids) and ids[end] in self.eos_ids
        ids = ids[: end + 1] if hit_eos else ids[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in params.stop if s in text]
        if cuts:
            text = text[: min(cuts)]  # OpenAI semantics: the stop string itself is not returned
        finish = "stop" if hit_eos or cuts else "length"
        return Completion(text, prompt_tokens, len(ids), seconds, finish)
