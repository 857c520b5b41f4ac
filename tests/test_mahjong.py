"""Mahjong Winning Tiles: the solver against the PyPI `mahjong` package, the generator, the verifier."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from mahjong.agari import Agari
from mahjong.hand_calculating.divider import HandDivider

from stratos.domains.base import completion_text
from stratos.domains.mahjong import (
    Mahjong,
    balanced_sample,
    is_complete,
    parse_tiles,
    tile_char,
    to_counts,
    winning_tiles,
)
from stratos.spec import TaskSpec

# Our index is code point - U+1F000 (winds, dragons red/green/white, characters, bamboo, dots);
# the package's 34-format is man 0-8, pin (dots) 9-17, sou (bamboo) 18-26, winds 27-30,
# dragons white 31, green 32, red 33.
TO_34 = (
    [27, 28, 29, 30, 33, 32, 31]
    + list(range(0, 9))  # characters = man
    + list(range(18, 27))  # bamboo = sou
    + list(range(9, 18))  # dots = pin
)


def chars(*numbers: int) -> list[int]:
    """Character tiles 1..9 as our indices."""
    return [6 + n for n in numbers]


def reference_winners(hand: list[int]) -> list[int]:
    """Winning tiles by the package: Agari's check, minus its special hands (seven pairs, 13 orphans)."""
    winners = []
    for t in range(34):
        counts34 = [0] * 34
        for tile in [*hand, t]:
            counts34[TO_34[tile]] += 1
        if max(counts34) > 4:
            continue  # the 136-tile set: a fifth copy does not exist
        if Agari.is_agari(counts34) and _has_standard_division(counts34):
            winners.append(t)
    return winners


def _has_standard_division(counts34: list[int]) -> bool:
    """Agari also accepts seven pairs and thirteen orphans; for those shapes ask the package's divider
    (which splits full 14-tile hands) whether a pair + four melds split exists as well."""
    seven_pairs = sorted(c for c in counts34 if c) == [2] * 7
    orphans = sum(counts34) == 14 and all(counts34[i] for i in (0, 8, 9, 17, 18, 26, *range(27, 34)))
    if not (seven_pairs or orphans):
        return True
    return any(len(division) == 5 for division in HandDivider.divide_hand(counts34))


def _random_hands(count: int, size: int, universe: list[int], rng: random.Random) -> list[list[int]]:
    wall = [t for t in universe for _ in range(4)]
    return [sorted(rng.sample(wall, size)) for _ in range(count)]


def test_solver_agrees_with_the_mahjong_package_on_thousands_of_hands():
    rng = random.Random(7)
    hands = [parse_tiles(e.question) for e in Mahjong(TaskSpec(domain="mahjong")).load("train", 1200, 3)]
    hands += _random_hands(600, 13, list(range(34)), rng)  # uniform draws from the 136-tile wall
    hands += _random_hands(400, 7, list(range(7, 16)), rng)  # one-suit variant: dense in waits
    hands += _random_hands(200, 10, list(range(7, 25)), rng)
    disagreements = [h for h in hands if winning_tiles(to_counts(h)) != reference_winners(h)]
    assert len(hands) >= 2000
    assert not disagreements, f"{len(disagreements)} hands disagree, first: {disagreements[0]}"
    # The sample must exercise many-sided waits, not just 'none'.
    waits = Counter(len(winning_tiles(to_counts(h))) for h in hands)
    assert max(waits) >= 7 and waits[0] < 0.6 * len(hands)


def test_seven_pairs_and_thirteen_orphans_are_not_wins():
    seven_pairs = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]  # honours only: no standard split
    assert Agari.is_agari(_counts34([*seven_pairs, 6]))  # the package counts it ...
    assert winning_tiles(to_counts(seven_pairs)) == []  # ... we exclude special hands
    orphans = [0, 1, 2, 3, 4, 5, 6, *chars(1, 9), 16, 24, 25, 33]
    assert Agari.is_agari(_counts34([*orphans, 0]))
    assert winning_tiles(to_counts(orphans)) == []


def _counts34(tiles: list[int]) -> list[int]:
    counts = [0] * 34
    for t in tiles:
        counts[TO_34[t]] += 1
    return counts


def test_a_tile_held_four_times_cannot_win():
    hand = chars(1, 1, 1, 1, 2, 3, 4)
    with_fifth = to_counts([*hand, chars(1)[0]])
    assert is_complete(with_fifth)  # 11 111 234 is a shape ...
    assert chars(1)[0] not in winning_tiles(to_counts(hand))  # ... but a fifth 1 does not exist
    assert winning_tiles(to_counts(hand)) == chars(4)


def test_nine_gates_waits_on_all_nine():
    assert winning_tiles(to_counts(chars(1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9))) == chars(*range(1, 10))


def test_honours_make_no_chows():
    hand = [0, 1, *chars(5, 5)]  # E S 55: E S W would be a chow if honours had sequences
    assert winning_tiles(to_counts(hand)) == []


def test_generator_is_deterministic_and_splits_are_disjoint():
    domain = Mahjong(TaskSpec(domain="mahjong", options={"hand_size": 7, "suits": 1, "honors": False}))
    first, again = domain.load("train", 300, 0), domain.load("train", 300, 0)
    assert [e.question for e in first] == [e.question for e in again]
    assert [e.question for e in domain.load("train", 300, 1)] != [e.question for e in first]
    test = domain.load("test", 100, 0)
    assert not {e.question for e in first} & {e.question for e in test}
    assert len({e.question for e in first}) == len(first)  # distinct hands
    assert all(
        len(parse_tiles(e.question)) == 7 and set(parse_tiles(e.question)) <= set(range(7, 16)) for e in first
    )


def test_generator_balances_the_number_of_winning_tiles():
    examples = Mahjong(TaskSpec(domain="mahjong")).load("train", 500, 0)
    counts = Counter(e.meta["num_winning"] for e in examples)
    assert len(examples) == 500
    assert set(range(7)) <= set(counts)  # 0..6 winning tiles all present
    full = [counts[k] for k in range(6)]  # buckets with ample supply get equal shares
    assert max(full) - min(full) <= 1, counts
    # Uniform random hands are ~90% 'none'; the balanced set is not.
    assert counts[0] <= 500 / 6


def test_balanced_sample_fills_small_buckets_first_and_spreads_the_rest():
    buckets = {0: list(range(100)), 1: list(range(100, 103)), 2: list(range(200, 300))}
    picked = balanced_sample(buckets, 41, random.Random(0))
    by_bucket = Counter(item // 100 for item in picked)
    assert by_bucket == {0: 19, 1: 3, 2: 19}


def test_answers_and_rationales_are_consistent():
    domain = Mahjong(TaskSpec(domain="mahjong", options={"hand_size": 10, "suits": 2}))
    for example in domain.load("test", 60, 0):
        hand = parse_tiles(example.question)
        winners = winning_tiles(to_counts(hand))
        assert example.answer == ("".join(tile_char(t) for t in winners) or "none")
        completion = completion_text(example.rationale, example.answer)
        assert domain.extract(completion) == example.answer
        assert domain.verify(example, completion)


@pytest.fixture(scope="module")
def waiting_example():
    domain = Mahjong(TaskSpec(domain="mahjong"))
    example = next(e for e in domain.load("train", 200, 0) if e.meta["num_winning"] >= 3)
    return domain, example


def test_verifier_rejects_corrupted_rationales(waiting_example):
    domain, example = waiting_example
    lines = example.rationale.splitlines()
    good = completion_text(example.rationale, example.answer)
    assert domain.verify(example, good)
    tile, _, groups = lines[0].partition(": ")
    swapped = groups.replace(groups[0], tile_char((parse_tiles(groups)[0] + 1) % 34), 1)
    corrupted = {
        "a tile changed in a decomposition": [f"{tile}: {swapped}", *lines[1:]],
        "a winning tile's line dropped": lines[1:],
        "a line repeated": [*lines, lines[0]],
        "no reasoning at all": [],
    }
    for what, body in corrupted.items():
        assert not domain.verify(example, completion_text("\n".join(body), example.answer)), what
    # Claims that do not match the final answer line.
    assert not domain.verify(example, completion_text(example.rationale, "none"))
    assert not domain.verify(example, example.rationale)  # no answer line


def test_verifier_rejects_a_chow_of_honours_and_a_fake_none():
    domain = Mahjong(TaskSpec(domain="mahjong", options={"hand_size": 4}))
    hand = [0, 1, 2, *chars(5)]  # E S W 5: only 5 wins (pair 55 + pung? no) -> no wait at all
    example = domain._example(hand)
    assert example.answer == "none" and domain.verify(example, completion_text(example.rationale, "none"))
    fake = (
        f"{tile_char(chars(5)[0])}: {tile_char(chars(5)[0]) * 2} {tile_char(0)}{tile_char(1)}{tile_char(2)}"
    )
    assert not domain.verify(example, completion_text(fake, tile_char(chars(5)[0])))
    assert not domain.verify(example, completion_text(fake, "none"))


def test_verifier_rejects_a_decomposition_with_a_fifth_copy():
    domain = Mahjong(TaskSpec(domain="mahjong", options={"hand_size": 7}))
    example = domain._example(chars(1, 1, 1, 1, 2, 3, 4))
    one, four = tile_char(chars(1)[0]), tile_char(chars(4)[0])
    assert example.answer == four and domain.verify(example, completion_text(example.rationale, four))
    fifth = f"{one}: {one * 2} {one * 3} {''.join(tile_char(t) for t in chars(2, 3, 4))}"
    assert not domain.verify(example, completion_text(f"{fifth}\n{example.rationale}", one + four))


def test_extract_and_score_use_set_semantics():
    domain = Mahjong(TaskSpec(domain="mahjong"))
    one, two = tile_char(chars(1)[0]), tile_char(chars(2)[0])
    assert domain.extract(f"...\n#### {two}{one}{one}") == f"{one}{two}"
    assert domain.extract("#### None") == "none"
    assert domain.extract("no answer line") is None
    assert domain.score(f"{one}{two}", f"{one}{two}")
    assert not domain.score(one, f"{one}{two}")
    assert not domain.score(None, "none")


@pytest.mark.parametrize(
    ("options", "field"),
    [({"hand_size": 12}, "hand_size"), ({"suits": 4}, "suits"), ({"honours": True}, "honours")],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=f"task.options.{field}"):
        Mahjong(TaskSpec(domain="mahjong", options=options))
