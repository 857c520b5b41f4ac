"""Stage prepare_data: deterministic, disjoint splits written atomically as Parquet with content hashes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from stratos.spec import TaskSpec
from tasks import prepare_data as stage
from tasks.prepare_data import META_FILE, PreparedData, content_hash, load_examples, write_splits


def _task(**fields) -> TaskSpec:
    defaults = {"domain": "arithmetic", "train_size": 300, "probe_size": 40, "test_size": 60, "seed": 0}
    return TaskSpec(**{**defaults, **fields})


def _questions(record, split: str) -> list[str]:
    return [e.question for e in load_examples(record.path(split))]


@pytest.mark.parametrize(
    "task",
    [
        _task(),
        _task(domain="gsm8k", train_size=200, probe_size=30, test_size=50),
        _task(domain="mahjong", train_size=120, probe_size=20, test_size=30, options={"hand_size": 7}),
    ],
    ids=["arithmetic", "gsm8k", "mahjong"],
)
def test_splits_are_sized_disjoint_and_round_trip(tmp_path, task):
    record = write_splits(task, tmp_path)
    sizes = {name: f.size for name, f in record.splits.items()}
    assert sizes == {"train": task.train_size, "probe": task.probe_size, "test": task.test_size}
    train, probe, test = (set(_questions(record, s)) for s in ("train", "probe", "test"))
    assert len(train) == task.train_size and len(probe) == task.probe_size
    assert not train & probe and not train & test and not probe & test
    examples = load_examples(record.path("train"))
    assert all(e.answer and e.question for e in examples)
    assert content_hash([stage.to_row(e) for e in examples]) == record.splits["train"].sha256
    assert PreparedData.model_validate_json((tmp_path / META_FILE).read_text()) == record


def test_same_seed_same_files_other_seed_other_splits(tmp_path):
    first = write_splits(_task(), tmp_path / "a")
    again = write_splits(_task(), tmp_path / "b")
    other = write_splits(_task(seed=1), tmp_path / "c")
    assert first.sha256 == again.sha256
    assert _questions(first, "train") == _questions(again, "train")
    assert other.sha256 != first.sha256 and _questions(other, "probe") != _questions(first, "probe")


def test_hash_ignores_the_path_and_follows_the_content():
    rows = [{"id": "1", "question": "1+1", "answer": "2", "rationale": "", "meta": "{}"}]
    changed = [{**rows[0], "answer": "3"}]
    assert content_hash(rows) == content_hash(
        [dict(reversed(list(rows[0].items())))]
    )  # key order is canonical
    assert content_hash(rows) != content_hash(changed)
    assert content_hash(rows) != content_hash(rows + rows)


def test_rerun_keeps_finished_files_and_leaves_no_temporaries(tmp_path):
    record = write_splits(_task(), tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert write_splits(_task(), tmp_path) == record
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    assert sorted(mtimes) == ["meta.json", "probe.parquet", "test.parquet", "train.parquet"]
    assert json.loads((tmp_path / "meta.json").read_text())["sha256"] == record.sha256


def test_a_failed_write_leaves_neither_temporary_nor_finished_file(tmp_path, monkeypatch):
    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as half_written:
            half_written.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(stage.datasets.Dataset, "to_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        write_splits(_task(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_changed_task_replaces_the_record(tmp_path):
    write_splits(_task(), tmp_path)
    bigger = write_splits(_task(train_size=350), tmp_path)
    assert PreparedData.model_validate_json((tmp_path / META_FILE).read_text()) == bigger
    assert pq.read_metadata(bigger.path("train")).num_rows == 350


def test_short_data_is_recorded_and_too_little_is_an_error(tmp_path):
    few = write_splits(
        _task(options={"digits": 1}, train_size=500, probe_size=10, test_size=5), tmp_path / "few"
    )
    assert few.splits["train"].size < few.splits["train"].requested == 500
    with pytest.raises(ValueError, match="task.probe_size = 100 leaves no training questions"):
        write_splits(_task(options={"digits": 1}, probe_size=100), tmp_path / "none")


def test_an_empty_split_still_writes_a_readable_file(tmp_path):
    stage.write_parquet([], tmp_path / "empty.parquet")
    assert pq.read_schema(tmp_path / "empty.parquet").names == list(stage.COLUMNS)
    assert load_examples(tmp_path / "empty.parquet") == []
