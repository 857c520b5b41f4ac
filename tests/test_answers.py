"""Reading answers the way real models write them: every rule, the order between them, no false positives.

The completions are written the way real instruct models answer (GSM8K-style solutions from
chat models, "The answer is", `\\boxed{}`, bold, bare final numbers) rather than in Stratos'
own `#### X` format, which the zoo models write.
"""

from __future__ import annotations

import pytest

from stratos.answers import NO_ANSWER, canonical_completion, read_answer
from stratos.domains import get_domain
from stratos.spec import TaskSpec

GSM8K = get_domain(TaskSpec(domain="gsm8k"))
ARITH = get_domain(TaskSpec(domain="arithmetic"))
MAHJONG = get_domain(TaskSpec(domain="mahjong", options={"hand_size": 4, "suits": 1, "honors": False}))


@pytest.mark.parametrize(
    ("text", "answer", "rule"),
    [
        ("She sells 16 - 3 - 4 = 9 eggs.\n9 * 2 = 18\n#### 18", "18", "strict"),
        (
            "Janet's ducks lay 16 eggs per day... so she makes $18 every day.\nFinal Answer: $18",
            "18",
            "final_answer",
        ),
        ("**Final Answer:** The final answer is 18", "18", "final_answer"),
        ("First 16 - 3 - 4 = 9. Then 9 * $2 = $18.\nThe answer is 18.", "18", "answer_is"),
        ("Let me compute.\n9 * 2 = 18\nAnswer: 18 dollars", "18", "answer_colon"),
        ("Step 1: 16-3-4=9\nStep 2: 9*2=18\n\\[\\boxed{18}\\]", "18", "boxed"),
        ("She makes 9 * 2 = 18 dollars, so the result is **$18**.", "18", "bold"),
        ("16 - 3 - 4 = 9 eggs are left, and 9 * 2 = 18.", "18", "fallback"),
        ("It costs 1,234.50 in total.\nThe answer is $1,234.50.", "1234.5", "answer_is"),
    ],
)
def test_each_rule_reads_a_real_looking_gsm8k_answer(text, answer, rule):
    reading = GSM8K.read(text)
    assert (reading.answer, reading.rule) == (answer, rule)
    assert reading.strict == (rule == "strict")


def test_the_strict_format_wins_over_every_flexible_rule_and_the_last_match_wins_in_a_rule():
    text = "The answer is 12.\nWait, I made a mistake: 9 * 2 = 18.\nThe answer is 18.\n#### 17"
    assert GSM8K.read(text).answer == "17"  # the canonical line is what a Stratos student writes
    assert GSM8K.read("The answer is 12.\nNo: the answer is 18.").answer == "18"
    # A rule earlier in the order beats a later one even when it comes first in the text.
    assert GSM8K.read("The answer is 18.\nSo **20** is wrong.").answer == "18"


def test_nested_braces_in_boxed_and_a_rule_whose_match_holds_no_number_is_skipped():
    assert GSM8K.read("\\boxed{\\frac{36}{2}} = \\boxed{18}").answer == "18"
    assert GSM8K.read("The answer is unknown to me, but 4 + 5 = 9").answer == "9"  # falls through to fallback
    assert GSM8K.read("**Step one** is to add: **7**").rule == "bold"


def test_no_false_positive_from_a_question_echoed_back():
    question = "What is 47 plus 85?"
    assert GSM8K.read(question, question=question) == NO_ANSWER
    assert GSM8K.read(f"You asked: {question}\nI do not know.", question=question) == NO_ANSWER
    assert ARITH.read("47+85", question="47+85") == NO_ANSWER
    # Echoing the question and then answering still reads the answer.
    assert GSM8K.read(f"{question}\n47 + 85 = 132", question=question).answer == "132"
    assert GSM8K.read("") == NO_ANSWER and GSM8K.read("I cannot solve this.") == NO_ANSWER


def test_extract_is_the_strict_reading_only():
    assert GSM8K.extract("The answer is 18.") is None
    assert GSM8K.extract("work\n#### 18") == "18"
    assert ARITH.extract("**132**") is None and ARITH.read("**132**").answer == "132"


def test_mahjong_reads_tiles_of_the_final_line_and_none():
    hand = "🀇🀇🀈🀉"
    assert MAHJONG.read("#### 🀇🀊").answer == "🀇🀊"
    assert (
        MAHJONG.read("The winning tiles are:\n🀊 🀇").answer,
        MAHJONG.read("The winning tiles are:\n🀊 🀇").rule,
    ) == (
        "🀇🀊",
        "fallback",
    )
    assert MAHJONG.read("Answer: none").answer == "none"
    assert MAHJONG.read("After checking every tile, no tile completes the hand.").answer == "none"
    assert MAHJONG.read(f"The hand is\n{hand}", question=hand) == NO_ANSWER  # the hand echoed back


def test_custom_text_and_numeric_scorers_read_their_kind_of_answer(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Capital of France?", "answer": "Paris"}\n')
    exact = get_domain(TaskSpec(domain="custom", dataset=str(data)))
    assert exact.read("The answer is Paris.").answer == "Paris"
    assert exact.read("I think it is Paris").answer is None  # no number fallback for text answers
    numeric = get_domain(TaskSpec(domain="custom", dataset=str(data), scorer="numeric"))
    assert numeric.read("It is 12, no, 14").answer == "14"


def test_canonical_completion_rewrites_to_the_training_format():
    text = "16 - 3 - 4 = 9\n9 * 2 = 18\nThe answer is 18."
    assert canonical_completion(text, GSM8K.read(text)) == "16 - 3 - 4 = 9\n9 * 2 = 18\n#### 18"
    inline = "So the answer is 18, since 9 * 2 = 18.\nThat is all."
    assert canonical_completion(inline, GSM8K.read(inline)) == inline + "\n#### 18"
    fallback = "9 * 2 = 18"
    assert canonical_completion(fallback, GSM8K.read(fallback)) == "9 * 2 = 18\n#### 18"
    strict = "9 * 2 = 18\n#### 18\n"
    assert canonical_completion(strict, GSM8K.read(strict)) == strict.strip()
    with pytest.raises(ValueError, match="has none"):
        canonical_completion("nothing", GSM8K.read("nothing"))


def test_read_answer_without_a_fallback_stops_after_the_flexible_rules():
    assert read_answer("7 apples", lambda t: t or None) == NO_ANSWER
    assert read_answer("Answer: seven", lambda t: t or None).answer == "seven"
