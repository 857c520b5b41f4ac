"""Stage 1, prepare data: draw the task's train / probe / test splits, write them as Parquet with content hashes.

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
import uuid
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from prefect import task as prefect_task
from pydantic import BaseModel, Field

from stratos.domains.base import Example
from stratos.files import FileRef, write_bytes_atomic
from stratos.jobs import CONTENT, digest, locked_work_dir
from stratos.spec import TaskSpec
from stratos.splits import draw_splits
from stratos.storage import fetch, from_uri

log = logging.getLogger(__name__)

SPLITS = ("train", "probe", "test")
COLUMNS = ("id", "question", "answer", "rationale", "meta")
_FEATURES = datasets.Features({column: datasets.Value("string") for column in COLUMNS})
META_FILE = "meta.json"


class SplitFile(BaseModel):
    path: str = Field(description="Parquet file of the split, where this stage wrote it.")
    uri: str | None = Field(None, description="The same file in the artifact store, once published.")
    size: int = Field(description="Rows in the split.")
    requested: int = Field(description="Rows the spec asked for; more than size when the data ran short.")
    sha256: str = Field(description="Content hash of the split's canonical rows.")


class PreparedData(BaseModel):
    """What this stage hands on: where each split lives, its size and its hash."""

    domain: str
    seed: int
    splits: dict[str, SplitFile]
    sha256: str = Field(description="Hash over all splits: the cache key of everything built from them.")
    uri: str | None = Field(
        None, description="The folder of the splits in the artifact store, once published."
    )

    def path(self, split: str) -> Path:
        return Path(self.splits[split].path)

    def published(self, root_uri: str) -> PreparedData:
        """This record with every split's URI under `root_uri` (where put_dir placed the folder)."""
        splits = {n: f.model_copy(update={"uri": f"{root_uri}/{n}.parquet"}) for n, f in self.splits.items()}
        return self.model_copy(update={"splits": splits, "uri": root_uri})


def load_split(split: SplitFile) -> list[Example]:
    """A split's examples, from the artifact store when published (any machine), else from its path."""
    return load_examples(fetch(split.uri) if split.uri else split.path)


@prefect_task(name="prepare-data", task_run_name="prepare-data", cache_policy=CONTENT, persist_result=True)
def prepare_data(task: TaskSpec, dataset: FileRef | None, store_uri: str) -> PreparedData:
    """Draw the splits and publish them as data/<hash>/{train,probe,test}.parquet.

    `dataset` is the user's file with its content hash (None for generated or vendored data):
    editing the file in place changes the hash and so re-runs the stage.
    """
    with locked_work_dir("data", digest(task.model_dump(mode="json"), dataset)) as local:
        prepared = write_splits(task, local)
        folder = from_uri(store_uri).put_dir(f"data/{prepared.sha256[:20]}", local)
    return prepared.published(folder.uri)


def write_splits(task: TaskSpec, out_dir: str | Path) -> PreparedData:
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
