"""Domains: loading, answer extraction, scoring and verifiers on real GSM8K lines, arithmetic and user data."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from stratos.domains import get_domain
from stratos.domains.arithmetic import check_steps
from stratos.domains.base import Example, completion_text
from stratos.domains.common import safe_eval
from stratos.domains.gsm8k import VENDORED_DIR, calculation_checks
from stratos.spec import TaskSpec

# --- GSM8K ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k():
    return get_domain(TaskSpec(domain="gsm8k"))


def test_gsm8k_parses_the_vendored_lines(gsm8k):
    first = json.loads((VENDORED_DIR / "train.jsonl").read_text().splitlines()[0])
    examples = {e.id: e for e in gsm8k.load("train", 5000, 0)}
    natalia = examples["gsm8k-train-0"]
    assert len(examples) == 1000 and len(gsm8k.load("test", 5000, 0)) == 300
    assert natalia.question == first["question"]
    assert natalia.answer == "72"
    assert natalia.rationale.endswith("72 clips altogether in April and May.")
    assert "####" not in natalia.rationale
    # Thousands separators in the gold answer are stripped.
    assert all("," not in e.answer and float(e.answer) == float(e.answer) for e in examples.values())


def test_gsm8k_load_is_seeded(gsm8k):
    assert [e.id for e in gsm8k.load("train", 20, 1)] == [e.id for e in gsm8k.load("train", 20, 1)]
    assert [e.id for e in gsm8k.load("train", 20, 1)] != [e.id for e in gsm8k.load("train", 20, 2)]


@pytest.mark.parametrize(
    ("completion", "extracted"),
    [
        ("so 72 clips.\n#### 72", "72"),
        ("#### 72.0", "72"),
        ("#### $1,234", "1234"),
        ("#### 0.50", "0.5"),
        ("first #### 3\nthen\n#### 4", "4"),
        ("The answer is 72.", None),
    ],
)
def test_gsm8k_extract(gsm8k, completion, extracted):
    assert gsm8k.extract(completion) == extracted


def test_gsm8k_scores_numerically(gsm8k):
    assert (
        gsm8k.score("72", "72")
        and gsm8k.score("72.0", "72")
        and gsm8k.score(gsm8k.extract("#### 1,000"), "1000")
    )
    assert not gsm8k.score("71", "72") and not gsm8k.score(None, "72")


def test_gsm8k_verifier_accepts_the_reference_solutions(gsm8k):
    examples = gsm8k.load("train", 1000, 0) + gsm8k.load("test", 300, 0)
    rejected = [e.id for e in examples if not gsm8k.verify(e, completion_text(e.rationale, e.answer))]
    # One vendored solution annotates an algebra step (<<...Y...>>) that is not arithmetic.
    assert len(rejected) <= 2, rejected


def test_gsm8k_verifier_rejects_a_wrong_calculation(gsm8k):
    example = next(e for e in gsm8k.load("train", 1000, 0) if e.id == "gsm8k-train-0")
    good = completion_text(example.rationale, example.answer)
    assert gsm8k.verify(example, good)
    assert not gsm8k.verify(example, good.replace("<<48+24=72>>", "<<48+24=82>>"))
    # Prose without annotations is checked too.
    assert gsm8k.verify(example, "48 / 2 = 24 in May, 48 + 24 = 72 in all.\n#### 72")
    assert not gsm8k.verify(example, "48 / 2 = 24 in May, 48 + 24 = 70 in all.\n#### 70")
    # Nothing to re-compute: only a right answer passes; no answer line never does.
    assert gsm8k.verify(example, "She sold seventy-two.\n#### 72")
    assert not gsm8k.verify(example, "She sold seventy.\n#### 70")
    assert not gsm8k.verify(example, example.rationale)


def test_calculation_checks_tolerate_rounding_but_not_errors():
    assert calculation_checks("<<10/3=3.33>> and <<2*0.5=1>>") == [True, True]
    assert calculation_checks("<<10/3=3.4>>") == [False]
    # Fragments of longer expressions are skipped; the last link of a chain is checked.
    assert calculation_checks("14 * 1/2 = 14 / 2 = 7 and 3 / 6 = 50% and 100/5 = 5A/5") == [True]
    assert calculation_checks("2 + 1 1/2 = 3 1/2, then 3 x 4 = 13") == [False]


def test_safe_eval_runs_arithmetic_only():
    assert safe_eval("48/2") == 24 and safe_eval("(3+2)*4") == 20 and safe_eval("1,000*2") == 2000
    assert safe_eval("__import__('os').getcwd()") is None
    assert safe_eval("9**9**9") is None  # would never finish
    assert safe_eval("1/0") is None


def test_gsm8k_full_dataset_path(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(
            '{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\\n#### 2"}\n'
        )
    domain = get_domain(TaskSpec(domain="gsm8k", dataset=str(tmp_path)))
    assert [e.answer for e in domain.load("test", 5, 0)] == ["2"]
    with pytest.raises(ValueError, match="task.dataset.*test.jsonl"):
        (tmp_path / "test.jsonl").unlink()
        get_domain(TaskSpec(domain="gsm8k", dataset=str(tmp_path)))


# --- arithmetic ----------------------------------------------------------------------------------


def test_arithmetic_examples_are_right_and_verified():
    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": 3, "ops": ["+", "*"]}))
    examples = domain.load("train", 300, 0)
    assert len({e.question for e in examples}) == 300
    assert {"+", "*"} <= {c for e in examples for c in e.question}
    for e in examples:
        assert int(e.answer) == eval(e.question)  # trusted: we generated these strings
        completion = completion_text(e.rationale, e.answer)
        assert domain.extract(completion) == e.answer and domain.score(e.answer, e.answer)
        assert domain.verify(e, completion)


def test_arithmetic_train_and_test_never_share_a_question():
    domain = get_domain(TaskSpec(domain="arithmetic", options={"digits": 2}))
    train, test = domain.load("train", 2000, 0), domain.load("test", 200, 0)
    assert not {e.question for e in train} & {e.question for e in test}
    assert [e.question for e in train[:50]] == [e.question for e in domain.load("train", 50, 0)]


def test_arithmetic_rationale_format():
    domain = get_domain(TaskSpec(domain="arithmetic", options={"ops": ["+", "*"]}))
    assert domain._example("47+85").rationale == "7+5+0=12\n4+8+1=13"
    assert domain._example("47*85").rationale == "47*5=235\n47*80=3760\n235+3760=3995"


@pytest.mark.parametrize(
    ("question", "completion"),
    [
        ("47+85", "7+5+0=12\n4+8+1=13\n#### 132"),
        ("47+85", "7+5+0=12\n4+8+0=12\n#### 122"),  # carry dropped
        ("47+85", "7+5+0=12\n4+8+1=14\n#### 142"),  # wrong sum
        ("47+85", "5+7+0=12\n8+4+1=13\n#### 132"),  # not the question's digits... order matters
        ("47+85", "7+5+0=12\n4+8+1=13\n#### 133"),  # answer does not follow
        ("47+85", "#### 132"),  # restated answer, no steps
        ("47*85", "47*5=235\n47*80=3760\n235+3760=3995\n#### 3995"),
        ("47*85", "47*5=235\n47*80=3770\n235+3770=4005\n#### 4005"),  # wrong partial
        ("47*85", "47*5=235\n47*8=376\n235+376=611\n#### 611"),  # place value lost
        ("47*85", "47*5=235\n47*80=3760\n235+3760=3985\n#### 3985"),  # wrong sum
    ],
)
def test_arithmetic_verifier(question, completion):
    good = {
        "47+85": "7+5+0=12\n4+8+1=13\n#### 132",
        "47*85": "47*5=235\n47*80=3760\n235+3760=3995\n#### 3995",
    }
    assert check_steps(question, completion) == (completion == good[question])


def test_arithmetic_bad_options_name_the_field():
    with pytest.raises(ValueError, match="task.options.ops"):
        get_domain(TaskSpec(domain="arithmetic", options={"ops": ["-"]}))
    with pytest.raises(ValueError, match="task.options.digits"):
        get_domain(TaskSpec(domain="arithmetic", options={"digits": 0}))


# --- custom --------------------------------------------------------------------------------------

ROWS = [{"q": f"capital number {i}?", "a": f"{i}.0", "why": f"because {i}"} for i in range(60)]


def _write(tmp_path, fmt: str) -> str:
    frame = pd.DataFrame(ROWS)
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return str(path)


def _custom(dataset: str, **fields):
    fields = {"question_column": "q", "answer_column": "a", **fields}
    return get_domain(TaskSpec(domain="custom", dataset=dataset, **fields))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "saved"])
def test_custom_reads_every_format_and_splits_by_question(tmp_path, fmt):
    domain = _custom(_write(tmp_path, fmt), options={"rationale_column": "why"})
    train, test = domain.load("train", 1000, 0), domain.load("test", 1000, 0)
    assert len(train) + len(test) == 60 and test
    assert not {e.question for e in train} & {e.question for e in test}
    example = next(e for e in train + test if e.question == "capital number 7?")
    assert (example.answer, example.rationale) == ("7.0", "because 7")
    assert [e.id for e in domain.load("train", 10, 3)] == [e.id for e in domain.load("train", 10, 3)]


def test_custom_uses_saved_splits(tmp_path):
    path = tmp_path / "dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:50]), "test": datasets.Dataset.from_list(ROWS[50:])}
    ).save_to_disk(str(path))
    domain = _custom(str(path))
    assert {e.question for e in domain.load("test", 100, 0)} == {r["q"] for r in ROWS[50:]}


def test_custom_missing_column_names_it_and_the_columns_present(tmp_path):
    domain = _custom(_write(tmp_path, "csv"), answer_column="label")
    with pytest.raises(ValueError, match=r"task.answer_column = 'label'.*columns present: q, a, why"):
        domain.load("train", 10, 0)


@pytest.mark.parametrize(
    ("scorer", "predicted", "gold", "expected"),
    [
        ("exact", " Paris ", "Paris", True),
        ("exact", "paris", "Paris", False),
        ("numeric", "$7", "7.0", True),
        ("numeric", "8", "7.0", False),
        ("set", "b, a ,a", "a;b", True),
        ("set", "a b c", "a b", False),
        ("user_scorers:case_insensitive", "PARIS", "paris", True),
        ("user_scorers:case_insensitive", "Rome", "paris", False),
    ],
)
def test_custom_scorers(tmp_path, user_scorers, scorer, predicted, gold, expected):
    domain = _custom(_write(tmp_path, "jsonl"), scorer=scorer)
    assert domain.score(domain.extract(f"thinking\n#### {predicted}"), gold) is expected
    assert domain.score(None, gold) is False


@pytest.fixture
def user_scorers(tmp_path, monkeypatch):
    """A user's scorer module on the import path, as a dotted-path scorer would find it."""
    (tmp_path / "user_scorers.py").write_text(
        "def case_insensitive(predicted, gold):\n    return predicted.strip().lower() == gold.strip().lower()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(
    ("scorer", "message"),
    [
        ("fuzzy", "task.scorer = 'fuzzy' is not a known scorer"),
        ("no_such_pkg.mod:f", "cannot import 'no_such_pkg.mod'"),
        ("user_scorers:nope", "has no function 'nope'"),
    ],
)
def test_custom_bad_scorer_names_the_field_and_the_fix(tmp_path, user_scorers, scorer, message):
    with pytest.raises(ValueError, match=message) as info:
        _custom(_write(tmp_path, "jsonl"), scorer=scorer)
    assert "package.module:function" in str(info.value)


def test_custom_verify_needs_only_an_answer_line(tmp_path):
    domain = _custom(_write(tmp_path, "jsonl"))
    example = Example(id="x", question="q", answer="a")
    assert domain.verify(example, "anything\n#### a") and not domain.verify(example, "no answer line")


def test_custom_bad_files(tmp_path):
    with pytest.raises(ValueError, match="task.dataset = .* does not exist"):
        _custom(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "1", "a": "2"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        _custom(str(bad)).load("train", 5, 0)
    (tmp_path / "data.txt").write_text("q,a\n")
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        _custom(str(tmp_path / "data.txt")).load("train", 5, 0)


def test_prompts_ask_for_the_answer_line():
    for domain in ("gsm8k", "mahjong", "arithmetic"):
        d = get_domain(TaskSpec(domain=domain))
        text = " ".join(m["content"] for m in d.messages("Q?"))
        injected = " ".join(m["content"] for m in d.injection_messages("Q?", "42"))
        assert "####" in text and "Q?" in text and "42" in injected, domain
