"""Messages for bad data, catalogs and specs: the file, the line the user would look at, and the fix."""

from __future__ import annotations

import json

import pytest

from stratos.catalog import load_catalog
from stratos.domains import get_domain
from stratos.spec import SpecError, TaskSpec, load_spec, parse_spec
from stratos.splits import check_splits, draw_splits

HEADER = "InstanceType,AcceleratorName,AcceleratorCount,Price,Region\n"


def _custom(path, **fields) -> TaskSpec:
    return TaskSpec(domain="custom", dataset=str(path), train_size=50, probe_size=5, test_size=10, **fields)


def test_jsonl_rows_are_named_by_their_file_line(tmp_path):
    rows = [json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(6)]
    rows[4] = json.dumps({"question": "q4", "answer": "  "})
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows[:2] + ["", ""] + rows[2:]))  # two blank lines: row 4 is on line 7
    with pytest.raises(ValueError, match=r"d.jsonl', line 7: 'answer' is empty; fill or drop that row"):
        check_splits(_custom(path))


def test_csv_records_are_named_by_the_line_they_start_on(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer,why\nq0,0,"two\nlines"\nq1,,x\n')
    with pytest.raises(ValueError, match=r"d.csv', line 4: 'answer' is empty"):
        check_splits(_custom(path, options={"rationale_column": "why"}))


def test_a_latin1_file_is_named_with_its_line_and_the_fix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("question,answer\nq,1\ncaf\xe9,2\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"'.*d.csv' is not UTF-8 text: byte 0xe9 on line 3 .*iconv -f latin1"
    ):
        check_splits(_custom(path))


def test_an_absurdly_long_question_is_refused_naming_its_line(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(20)]
    rows[9]["question"] = "x" * 200_000
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        ValueError, match=r"line 10: 'question' is 200,000 characters long, more than the 100,000"
    ):
        check_splits(_custom(path))


def test_identical_questions_are_counted_as_one(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"question": "same?", "answer": str(i)}) for i in range(300)))
    with pytest.raises(ValueError, match="has 300 row.s., which de-duplicate to 1 distinct question"):
        check_splits(_custom(path))


def test_duplicates_do_not_cost_distinct_questions(tmp_path):
    """The whole file is read before de-duplication: many copies of a few questions crowd out nothing."""
    rows = [{"question": "dup?", "answer": "1"}] * 200 + [
        {"question": f"q{i}", "answer": str(i)} for i in range(60)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    splits = draw_splits(_custom(path))
    distinct = {e.question for split in splits.values() for e in split}
    assert len(distinct) == sum(len(s) for s in splits.values()) and len(distinct) >= 50


def test_a_generator_is_asked_for_no_more_than_it_holds():
    task = TaskSpec(
        domain="arithmetic", options={"digits": 1}, train_size=900_000, probe_size=10, test_size=10
    )
    notes = check_splits(task)
    assert notes == [
        "task.train_size + probe_size = 900,010 is more than the 100 questions the arithmetic train split can "
        "give with these options; drawing 100 (lower it to silence this)"
    ]
    with pytest.raises(
        ValueError, match="task.probe_size = 100 leaves no training questions: .* at most 100"
    ):
        check_splits(task.model_copy(update={"probe_size": 100}))
    assert get_domain(TaskSpec(domain="mahjong")).capacity("train") == 50_000


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "has no header row"),
        (HEADER.encode() + b"gpu,A100,1,1.1,us-east-1\xff\n", r"is not UTF-8 text: byte 0xff on line 2"),
        (b"\x00\x01\x02binary", "is a binary file"),
    ],
)
def test_catalog_files_that_cannot_be_read(tmp_path, content, message):
    path = tmp_path / "cat.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_catalog(path)
    with pytest.raises(ValueError, match="is a directory, not a file"):
        load_catalog(tmp_path)


def test_spec_catalog_entries_must_be_non_empty_files(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(SpecError, match="is empty .0 bytes."):
        parse_spec({"servers": {"catalogs": [str(tmp_path / "empty.csv")]}})
    with pytest.raises(SpecError, match="is a directory, not a file"):
        parse_spec({"servers": {"catalogs": [str(tmp_path)]}})


@pytest.mark.parametrize(
    "content, message",
    [
        (b"task:\n  domain: caf\xe9\n", r"is not UTF-8 text: byte 0xe9 on line 2"),
        (bytes(range(256)), "is a binary file"),
        (b"- a\n- b\n", "holds a YAML list, not a mapping of sections"),
        (b"task: [unclosed\n", "is not valid YAML"),
    ],
)
def test_spec_files_that_cannot_be_read(tmp_path, content, message):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert "\n" not in str(err.value)


def test_duplicate_names_say_which_entries_without_dumping_the_spec():
    students = [
        {"name": "nano", "model": "zoo:nano"},
        {"name": "micro", "model": "zoo:micro"},
        {"name": "nano", "model": "x"},
    ]
    with pytest.raises(SpecError) as err:
        parse_spec({"students": students})
    assert (
        str(err.value)
        == "students names must be unique; 'nano' is the name of students[0] and students[2]. Rename one"
    )
