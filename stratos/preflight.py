"""The checks a run's inputs pass before Prefect starts: whatever can fail in a second fails here.

`preflight(spec)` (also `flows.preflight`) runs them in order, cheapest first, so a bad input
creates nothing:
the task's data (every row of a user's file), every model candidate (a directory has a
config.json and safetensors headers that match the file sizes; only the headers are read, never
the weights), credentials (`api_key_env` is set), the writable directories (STRATOS_HOME, the
zoo, the artifact store), and last the network: each `openai` endpoint answers GET /models and
an S3 store answers a HEAD of its bucket, both with short timeouts.

A bad input raises SpecError (exit 2 from the CLI); a service that does not answer raises
Unreachable (exit 4). Messages name the field, the value and the fix, and never a secret.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import httpx

from stratos import zoo
from stratos.backends.stored import StoredBackend
from stratos.catalog import load_catalogs
from stratos.data import CATALOG_DIR
from stratos.errors import Unreachable
from stratos.spec import DistillSpec, ModelCandidate, SpecError, require_runnable
from stratos.splits import check_splits
from stratos.storage import StorageError, StoreUnreachable, from_uri, stratos_home, writable_dir

ENDPOINT_TIMEOUT_S = 3.0
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header larger than this is corrupt, not real


def preflight(spec: DistillSpec, network: bool = True) -> list[str]:
    """Everything checkable in a second, before Prefect starts; returns warnings, raises on a bad input.

    Raises SpecError (a bad input: field, value and fix) or Unreachable (a teacher endpoint or
    an S3 store that does not answer). `network=False` skips the requests to endpoints and S3
    (a spec checked away from its services).
    """
    task = require_runnable(spec)
    try:
        notes = check_splits(task)
        catalogs = [p for p in spec.servers.catalog_paths() if p.parent != CATALOG_DIR]
        load_catalogs(catalogs)  # the user's files; the shipped ones are known to read
    except (ValueError, FileNotFoundError) as err:
        raise SpecError(str(err)) from None
    for label, candidate in candidates(spec):
        check_model(label, candidate)
    check_credentials(spec)
    check_directories(spec)
    if network:
        check_prefect_api()
        check_store(spec)
        check_endpoints(spec)
    return notes


def candidates(spec: DistillSpec) -> list[tuple[str, ModelCandidate]]:
    """('teachers[0] 'name'', candidate) for every teacher and student: the label errors start with."""
    return [
        (f"{group}[{i}] '{c.name}'", c)
        for group, members in (("teachers", spec.teachers), ("students", spec.students))
        for i, c in enumerate(members)
    ]


# --- models ----------------------------------------------------------------------------------


def check_model(label: str, candidate: ModelCandidate) -> None:
    """A candidate's model can be loaded later: its files are there and whole (headers only)."""
    model = candidate.model
    if candidate.kind == "stored":
        _check_stored(label, Path(model))
    elif candidate.kind == "hf" and zoo.is_zoo_ref(model):
        try:
            zoo.check_ref(model)
        except ValueError as err:
            raise SpecError(f"{label}: {err}") from None
    elif candidate.kind == "hf":
        path = Path(model).expanduser()
        if path.exists() or _looks_like_path(model):
            check_model_dir(label, path)
        else:
            _check_hub_id(label, model)


def _looks_like_path(model: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else (absolute, ./, ~, deeper) is meant as a path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def _check_hub_id(label: str, model: str) -> None:
    """Offline, a hub id must already be in the local Hugging Face cache."""
    if os.environ.get("HF_HUB_OFFLINE", "1") in ("0", "false", "False"):
        return  # online: the hub answers for itself when the model is loaded
    from huggingface_hub import try_to_load_from_cache  # a light import, but only needed here

    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise SpecError(
            f"{label}: model '{model}' is not a local directory, and as a hub id it is not in the local "
            "Hugging Face cache while the hub is offline (HF_HUB_OFFLINE=1); give a directory written by "
            "save_pretrained, a zoo: model, or export HF_HUB_OFFLINE=0 with network"
        )


def check_model_dir(label: str, path: Path) -> None:
    """A save_pretrained directory: config.json with a model_type, and weights whose headers read."""
    if not path.exists():
        raise SpecError(f"{label}: model directory '{path}' does not exist; give a save_pretrained directory")
    if not path.is_dir():
        raise SpecError(f"{label}: model '{path}' is a file; give the directory that holds config.json")
    config = path / "config.json"
    if not config.is_file():
        raise SpecError(
            f"{label}: '{path}' has no config.json, so it is not a saved model; give a directory written by "
            "save_pretrained (config.json and *.safetensors)"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        model_type = None
    if not model_type:
        raise SpecError(
            f"{label}: '{config}' is not a model config (not JSON, or no 'model_type'); re-save the model "
            "with save_pretrained"
        )
    shards = sorted(path.glob("*.safetensors"))
    if not shards and not any(path.glob("*.bin")) and not any(path.glob("*.gguf")):
        raise SpecError(
            f"{label}: '{path}' has a config.json but no weights (*.safetensors); re-save the model with "
            "save_pretrained"
        )
    for shard in shards:
        problem = safetensors_problem(shard)
        if problem:
            raise SpecError(f"{label}: '{shard}' {problem}; re-save or re-download the model")


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, from its header alone (None when it is whole).

    The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor to
    its [begin, end) data offsets, then the data. A whole file is exactly 8 + N + the last end.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is truncated: {size} bytes, not even a header"
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER_BYTES):
            return (
                f"is truncated or not safetensors: its header claims {length:,} bytes of a {size:,}-byte file"
            )
        try:
            header = json.loads(f.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return "has an unreadable header (not safetensors JSON)"
    if 8 + length + end != size:
        return f"is truncated: its header describes {8 + length + end:,} bytes but the file has {size:,}"
    return None


def _check_stored(label: str, path: Path) -> None:
    if path.is_dir():
        raise SpecError(f"{label}: stored completions '{path}' is a directory; give the JSONL file")
    try:
        StoredBackend(path)  # reads and parses every line
    except UnicodeDecodeError:
        raise SpecError(
            f"{label}: stored completions '{path}' is not UTF-8 text; save the JSONL file as UTF-8"
        ) from None
    except (ValueError, FileNotFoundError) as err:
        raise SpecError(f"{label}: {err}") from None


# --- credentials, directories, services -----------------------------------------------------------


def check_credentials(spec: DistillSpec) -> None:
    """Every api_key_env names a variable that is set (its value is never read into a message)."""
    for label, candidate in candidates(spec):
        env = candidate.api_key_env
        if env and not os.environ.get(env):
            raise SpecError(
                f"{label}: api_key_env = '{env}', but the environment variable {env} is not set; export it "
                "(the key is never logged) or remove api_key_env for an endpoint without authentication"
            )


def check_directories(spec: DistillSpec) -> None:
    """STRATOS_HOME, PREFECT_HOME, the zoo (for zoo: models) and a local artifact store are writable."""
    try:
        writable_dir(stratos_home(), "STRATOS_HOME")
        if not os.environ.get("PREFECT_API_URL"):  # the temporary server keeps its database there
            prefect_home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
            writable_dir(prefect_home, "PREFECT_HOME")
        if any(c.kind == "hf" and zoo.is_zoo_ref(c.model) for _, c in candidates(spec)):
            writable_dir(zoo.zoo_path(), "the model zoo (STRATOS_ZOO_DIR)")
        if spec.storage.uri and not spec.storage.block and not spec.storage.uri.startswith("s3://"):
            from_uri(spec.storage.uri).check()
    except StorageError as err:
        raise SpecError(str(err)) from None


def check_store(spec: DistillSpec) -> None:
    """An S3 store answers (a block's store is checked once Prefect is up: the block lives there)."""
    if spec.storage.block or not (spec.storage.uri or "").startswith("s3://"):
        return
    try:
        from_uri(spec.storage.uri).check()
    except StoreUnreachable as err:
        raise Unreachable(str(err)) from None
    except StorageError as err:
        raise SpecError(str(err)) from None


def check_prefect_api() -> None:
    """A PREFECT_API_URL the run is pointed at answers /health (without one, the run starts its own server)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=ENDPOINT_TIMEOUT_S).raise_for_status()
    except httpx.HTTPError as err:
        raise Unreachable(
            f"PREFECT_API_URL = {url} does not answer ({type(err).__name__}: {_reason(err)}); start that server, "
            "or unset PREFECT_API_URL to let the run start a temporary one"
        ) from None


def check_endpoints(spec: DistillSpec) -> None:
    """Every openai candidate's endpoint answers a cheap GET /models within a few seconds."""
    for label, candidate in candidates(spec):
        if candidate.kind == "openai":
            check_endpoint(label, candidate)


def check_endpoint(label: str, candidate: ModelCandidate) -> None:
    assert candidate.base_url is not None  # the spec requires it for kind 'openai'
    url = candidate.base_url.rstrip("/") + "/models"
    key = os.environ.get(candidate.api_key_env) if candidate.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=ENDPOINT_TIMEOUT_S)
    except httpx.HTTPError as err:
        raise Unreachable(
            f"{label}: the endpoint {candidate.base_url} does not answer ({type(err).__name__}: "
            f"{_reason(err)}); start the server or fix base_url"
        ) from None
    if response.status_code in (401, 403):
        source = f"${candidate.api_key_env}" if candidate.api_key_env else "no key (api_key_env is empty)"
        raise SpecError(
            f"{label}: {candidate.base_url} refused the request with HTTP {response.status_code} using "
            f"{source}; check the key, or set api_key_env to the variable that holds it"
        )


def _reason(err: httpx.HTTPError) -> str:
    text = str(err).split("] ")[-1].strip() or type(err).__name__
    return text[:120]
