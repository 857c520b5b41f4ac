"""Stage: draw the task's train / probe / test splits and write them as Parquet with content hashes.

The splits are deterministic for a seed. Train and probe come from the domain's
train split and never share a question; test comes from its held-out split and
shares no question with either. Each split is written under a temporary name
and renamed, and `meta.json` (the record this stage returns) is written last,
so a crash never leaves a file a later run could take for a finished one.

The content hash (sha256 over the canonical rows) is what later stages use as
their cache key: same questions and answers, same hash, whatever the path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import uuid
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from prefect import task
from pydantic import BaseModel, Field

from stratos.domains import get_domain
from stratos.domains.base import Example
from stratos.files import write_bytes_atomic
from stratos.spec import TaskSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "probe", "test")
COLUMNS = ("id", "question", "answer", "rationale", "meta")
_FEATURES = datasets.Features({column: datasets.Value("string") for column in COLUMNS})
META_FILE = "meta.json"


class SplitFile(BaseModel):
    path: str = Field(description="Parquet file of the split.")
    size: int = Field(description="Rows in the split.")
    requested: int = Field(description="Rows the spec asked for; more than size when the data ran short.")
    sha256: str = Field(description="Content hash of the split's canonical rows.")


class PreparedData(BaseModel):
    """What this stage hands on: where each split lives, its size and its hash."""

    domain: str
    seed: int
    splits: dict[str, SplitFile]
    sha256: str = Field(description="Hash over all splits: the cache key of everything built from them.")

    def path(self, split: str) -> Path:
        return Path(self.splits[split].path)


def prepare_data(task: TaskSpec, out_dir: str | Path) -> PreparedData:
    """Draw the splits for `task`, write them under `out_dir` (unchanged files are kept) and describe them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = draw_splits(task)
    requested = {"train": task.train_size, "probe": task.probe_size, "test": task.test_size}
    files = {}
    for name, examples in splits.items():
        rows = [to_row(e) for e in examples]
        if len(rows) < requested[name]:
            log.warning("%s split has %d of the %d examples asked for", name, len(rows), requested[name])
        files[name] = SplitFile(
            path=str(out / f"{name}.parquet"),
            size=len(rows),
            requested=requested[name],
            sha256=content_hash(rows),
        )
    record = PreparedData(domain=task.domain, seed=task.seed, splits=files, sha256=_combined_hash(files))
    if _already_written(out, record):
        return record
    # The old record must not vouch for the new files while they are being replaced.
    (out / META_FILE).unlink(missing_ok=True)
    for name, examples in splits.items():
        write_parquet([to_row(e) for e in examples], Path(files[name].path))
    write_bytes_atomic(out / META_FILE, record.model_dump_json(indent=2).encode())
    return record


def draw_splits(task: TaskSpec) -> dict[str, list[Example]]:
    """Deterministic train / probe / test examples; probe is disjoint from both others."""
    domain = get_domain(task)
    test = _distinct(domain.load("test", task.test_size, task.seed))
    held_out = {e.question for e in test}
    pool = domain.load("train", task.train_size + task.probe_size, task.seed)
    # A user's own splits may overlap; a test question must never be trained or probed on.
    pool = [e for e in _distinct(pool) if e.question not in held_out]
    if len(pool) <= task.probe_size:
        raise ValueError(
            f"task.probe_size = {task.probe_size} leaves no training questions: the {task.domain} train "
            f"split has only {len(pool)}. Lower task.probe_size or give more data"
        )
    if not test:
        raise ValueError(f"the {task.domain} test split is empty; give data with a test split or more rows")
    random.Random(f"probe-{task.seed}").shuffle(pool)
    probe, train = pool[: task.probe_size], pool[task.probe_size :][: task.train_size]
    return {"train": train, "probe": probe, "test": test}


def _distinct(examples: list[Example]) -> list[Example]:
    seen: set[str] = set()
    kept = []
    for e in examples:
        if e.question not in seen:
            seen.add(e.question)
            kept.append(e)
    return kept


def to_row(example: Example) -> dict[str, str]:
    """A flat, all-text row; meta is JSON so every domain shares one Parquet schema."""
    return {
        "id": example.id,
        "question": example.question,
        "answer": example.answer,
        "rationale": example.rationale,
        "meta": json.dumps(example.meta, sort_keys=True, ensure_ascii=False),
    }


def content_hash(rows: list[dict[str, str]]) -> str:
    """sha256 over rows in order, each as canonical JSON on its own line."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _combined_hash(files: dict[str, SplitFile]) -> str:
    text = "\n".join(f"{name}:{files[name].sha256}" for name in SPLITS)
    return hashlib.sha256(text.encode()).hexdigest()


def _already_written(out: Path, record: PreparedData) -> bool:
    """Whether a finished earlier run wrote exactly these splits (then nothing is rewritten)."""
    try:
        previous = PreparedData.model_validate_json((out / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return previous == record and all(Path(f.path).is_file() for f in record.splits.values())


def write_parquet(rows: list[dict], path: Path, features: datasets.Features | None = None) -> None:
    """Write rows with the `datasets` library under a temporary name, then rename into place.

    `features` is the schema (default: the split schema); it also makes an empty file well-formed.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per split file is noise in a pipeline log
    try:
        schema = features or _FEATURES
        # Column-wise, so an empty split still gets its columns (from_list([]) has none).
        columns = {name: [row[name] for row in rows] for name in schema}
        datasets.Dataset.from_dict(columns, features=schema).to_parquet(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if not bars_were_off:
            datasets.enable_progress_bars()


def load_examples(path: str | Path) -> list[Example]:
    """Examples back from a split file written by `prepare_data`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file '{path}' does not exist; run prepare_data first")
    rows = pq.read_table(path).to_pylist()
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"'{path}' lacks columns {missing}; it was not written by prepare_data")
    return [
        Example(
            id=r["id"],
            question=r["question"],
            answer=r["answer"],
            rationale=r["rationale"],
            meta=json.loads(r["meta"]),
        )
        for r in rows
    ]


def load_prepared(out_dir: str | Path) -> PreparedData:
    """The record a finished `prepare_data` left in `out_dir`."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist; run prepare_data into '{out_dir}' first")
    return PreparedData.model_validate_json(path.read_text())


prepare_data_task = task(prepare_data, name="prepare-data", retries=0)
