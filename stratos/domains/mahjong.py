"""Mahjong Winning Tiles, the paper's Knowledge Injection task: which tiles complete a hand?

A hand of 13 tiles (3k+1 in the smaller variants) is written as sorted Unicode
Mahjong symbols. The answer is the set of every tile that completes it, sorted
and concatenated, or "none". Complete = one pair + k melds, a meld being a chow
(three consecutive tiles of one suit; honours have no sequences) or a pung
(three identical tiles). No special hands (seven pairs, thirteen orphans), and
with four copies of each tile a tile the hand already holds four times cannot
be the winning tile.

The public dataset (`sileixu/mahjong-winning-tiles`) is not reachable here, so
the generator rebuilds it: hands come from complete hands minus one tile (so
many-sided waits occur) mixed with random draws (mostly no wait), and the
dataset is resampled so every number of winning tiles is equally represented,
as far as the hand space allows.

Rationale: one line per winning tile with the decomposition that tile makes,

    🀇: 🀇🀇 🀇🀈🀉 🀊🀋🀌 ...     (tile, then the pair and the melds of hand + tile)

or "no tile completes the hand". The verifier re-checks every claimed line.
"""

from __future__ import annotations

import logging
import random
import re
import time
from functools import cache

from stratos.answers import Reading, read_answer, read_strict
from stratos.domains.base import Example, extract_marked_answer
from stratos.domains.common import split_of, stable_id
from stratos.spec import TaskSpec

FIRST = 0x1F000  # U+1F000 East wind; a tile's index is its code point minus this
HONOURS = range(0, 7)  # winds E S W N, dragons red green white
SUITS = (range(7, 16), range(16, 25), range(25, 34))  # characters, bamboo, dots: 1..9 each
NUM_TILES = 34
COPIES = 4
NONE = "none"
NO_WAIT_LINE = "no tile completes the hand"
TEST_FRACTION = 0.1
# Hands per split the generator is asked for at most (~8 minutes here); the public set has 4,260.
MAX_DRAW = 50_000
PROGRESS_EVERY_S = 15.0
log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "List every tile that completes the Mahjong hand (one pair plus melds). For each winning tile "
    "write 'tile: pair melds', then end with '#### tiles' (or '#### none')."
)
_LINE_RE = re.compile(r"^\s*(\S)\s*:\s*(.*)$")
# How a model says that no tile wins: "none", "no tile completes the hand", "there are no winning tiles".
_NONE_RE = re.compile(r"^\W*none\b|\bno (?:winning )?tiles?\b|\bno tile\b", re.IGNORECASE)
_LINE_TEXT_RE = re.compile(r"[^\n]*\S[^\n]*")

Counts = tuple[int, ...]  # 34 tile counts, index = code point - FIRST


def tile_char(index: int) -> str:
    return chr(FIRST + index)


def tile_index(char: str) -> int | None:
    index = ord(char) - FIRST
    return index if 0 <= index < NUM_TILES else None


def parse_tiles(text: str) -> list[int]:
    """Tile indices of every Mahjong symbol in `text`, other characters ignored."""
    return [i for i in (tile_index(c) for c in text) if i is not None]


def to_counts(tiles: list[int]) -> Counts:
    counts = [0] * NUM_TILES
    for t in tiles:
        counts[t] += 1
    return tuple(counts)


def tiles_text(tiles: list[int]) -> str:
    return "".join(tile_char(t) for t in sorted(tiles))


def answer_text(winners: list[int]) -> str:
    """Canonical answer: winning tiles sorted and concatenated, or 'none'."""
    return tiles_text(winners) if winners else NONE


def tiles_answer(text: str) -> str | None:
    """A stated answer as the canonical answer: its tiles sorted without repeats, 'none', or None."""
    tiles = parse_tiles(text)
    if tiles:
        return tiles_text(sorted(set(tiles)))
    return NONE if _NONE_RE.search(text) else None


def last_line(text: str):
    """The fallback candidate for set answers: the last line with any text (models list the tiles last)."""
    lines = list(_LINE_TEXT_RE.finditer(text))
    if lines:
        yield lines[-1].group(0), lines[-1].span()


# --- solver --------------------------------------------------------------------------------------


@cache
def _melds_only(suit: Counts) -> bool:
    """Whether 9 counts of one suit split into chows and pungs only."""
    i = next((k for k, c in enumerate(suit) if c), None)
    if i is None:
        return True
    # The lowest tile must start a pung or a chow; try both.
    if suit[i] >= 3 and _melds_only(suit[:i] + (suit[i] - 3,) + suit[i + 1 :]):
        return True
    if i <= 6 and suit[i + 1] and suit[i + 2]:
        rest = list(suit)
        rest[i] -= 1
        rest[i + 1] -= 1
        rest[i + 2] -= 1
        return _melds_only(tuple(rest))
    return False


@cache
def _melds_and_pair(suit: Counts) -> bool:
    """Whether 9 counts of one suit split into one pair plus chows and pungs."""
    return any(c >= 2 and _melds_only(suit[:j] + (c - 2,) + suit[j + 1 :]) for j, c in enumerate(suit))


def is_complete(counts: Counts) -> bool:
    """Whether 3k+2 tiles form one pair plus k melds (no special hands)."""
    pairs = 0
    for h in HONOURS:
        if counts[h] == 2:
            pairs += 1
        elif counts[h] not in (0, 3):
            return False
    for suit_range in SUITS:
        suit = counts[suit_range.start : suit_range.stop]
        remainder = sum(suit) % 3
        if remainder == 1:
            return False
        if remainder == 2:
            pairs += 1
            if pairs > 1 or not _melds_and_pair(suit):
                return False
        elif not _melds_only(suit):
            return False
    return pairs == 1


def winning_tiles(counts: Counts) -> list[int]:
    """Every tile that completes a 3k+1 hand; a tile held four times cannot be drawn again."""
    winners = []
    for t in range(NUM_TILES):
        if counts[t] < COPIES:
            after = counts[:t] + (counts[t] + 1,) + counts[t + 1 :]
            if is_complete(after):
                winners.append(t)
    return winners


def decompose(counts: Counts) -> list[list[int]] | None:
    """One decomposition of a complete hand: [pair, meld, meld, ...] as tile lists, or None."""
    for p in range(NUM_TILES):
        if counts[p] >= 2:
            rest = list(counts)
            rest[p] -= 2
            melds = _split_melds(rest)
            if melds is not None:
                return [[p, p], *melds]
    return None


def _split_melds(counts: list[int]) -> list[list[int]] | None:
    i = next((k for k, c in enumerate(counts) if c), None)
    if i is None:
        return []
    options = []
    if counts[i] >= 3:
        options.append([i, i, i])
    if _starts_chow(i) and counts[i + 1] and counts[i + 2]:
        options.append([i, i + 1, i + 2])
    for meld in options:
        for t in meld:
            counts[t] -= 1
        found = _split_melds(counts)
        for t in meld:
            counts[t] += 1
        if found is not None:
            return [meld, *found]
    return None


def _starts_chow(i: int) -> bool:
    return any(s.start <= i <= s.stop - 3 for s in SUITS)


def is_meld(group: list[int]) -> bool:
    a, b, c = sorted(group)
    return a == b == c or (_starts_chow(a) and b == a + 1 and c == a + 2)


# --- rationale and verifier ----------------------------------------------------------------------


def rationale_for(hand: list[int]) -> str:
    """The reference reasoning: one decomposition line per winning tile."""
    counts = to_counts(hand)
    lines = []
    for t in winning_tiles(counts):
        groups = decompose(to_counts([*hand, t]))
        assert groups is not None  # winning_tiles said hand + t is complete
        lines.append(f"{tile_char(t)}: " + " ".join(tiles_text(g) for g in groups))
    return "\n".join(lines) if lines else NO_WAIT_LINE


def check_rationale(hand: list[int], completion: str) -> bool:
    """Every claimed line is a valid pair+melds split of hand + tile, and the claims match the answer.

    Lines without tiles are free prose; a line with tiles must be a 'tile: pair melds' claim.
    """
    answer = extract_marked_answer(completion)
    if answer is None:
        return False
    claimed: list[int] = []
    for line in completion.splitlines():
        if line.lstrip().startswith("####") or not parse_tiles(line):
            continue  # prose without tiles is allowed; it claims nothing
        match = _LINE_RE.match(line)
        tile = tile_index(match.group(1)) if match else None
        if tile is None or tile in claimed or not _valid_split(hand, tile, match.group(2)):
            return False
        claimed.append(tile)
    if answer.strip().lower() == NONE:
        return not claimed
    return sorted(claimed) == sorted(set(parse_tiles(answer))) and len(claimed) == len(parse_tiles(answer))


def _valid_split(hand: list[int], tile: int, groups_text: str) -> bool:
    groups = [parse_tiles(g) for g in groups_text.split()]
    total = sorted(t for g in groups for t in g)
    if total != sorted([*hand, tile]) or to_counts(total)[tile] > COPIES:
        return False
    pairs = [g for g in groups if len(g) == 2]
    melds = [g for g in groups if len(g) == 3]
    if len(pairs) != 1 or pairs[0][0] != pairs[0][1] or len(pairs) + len(melds) != len(groups):
        return False
    return all(is_meld(m) for m in melds)


# --- generator -----------------------------------------------------------------------------------


def tile_universe(suits: int, honors: bool) -> list[int]:
    """The tiles a variant uses: the first `suits` suits (characters, bamboo, dots), plus honours."""
    tiles = [t for s in SUITS[:suits] for t in s]
    return [*HONOURS, *tiles] if honors else tiles


def _random_hand(rng: random.Random, universe: list[int], size: int) -> list[int]:
    wall = [t for t in universe for _ in range(COPIES)]
    return sorted(rng.sample(wall, size))


def _constructed_hand(rng: random.Random, universe: list[int], size: int) -> list[int] | None:
    """A complete hand of size+1 minus one tile, so the hand waits on at least that tile.

    Many-sided waits live in one-suit shapes, so half the hands are drawn from one
    focus suit only and the rest lean towards it.
    """
    suited = [s for s in SUITS if s.start in universe]
    focus = list(rng.choice(suited)) if suited else universe
    lean = 1.0 if rng.random() < 0.5 else 0.7
    counts = [0] * NUM_TILES
    counts[rng.choice(focus if rng.random() < lean else universe)] += 2
    for _ in range((size - 1) // 3):
        pool = focus if rng.random() < lean else universe
        start = rng.choice(pool)
        meld = [start, start + 1, start + 2] if _starts_chow(start) and rng.random() < 0.6 else [start] * 3
        for t in meld:
            counts[t] += 1
    if max(counts) > COPIES:
        return None
    tiles = [t for t in range(NUM_TILES) for _ in range(counts[t])]
    tiles.remove(rng.choice(tiles))
    return tiles


def _candidates(split: str, size: int, seed: int, options: dict) -> dict[int, dict[str, list[int]]]:
    """Distinct hands of the split, bucketed by number of winning tiles."""
    rng = random.Random(f"mahjong-{seed}-{split}")
    universe = tile_universe(options["suits"], options["honors"])
    buckets: dict[int, dict[str, list[int]]] = {}
    seen: set[str] = set()
    # Only the split's share of candidates survives the hash split; draw enough for either split.
    share = TEST_FRACTION if split == "test" else 1 - TEST_FRACTION
    attempts = int(options["attempts_per_example"] * size / share)
    last = time.monotonic()
    for attempt in range(attempts):
        if time.monotonic() - last > PROGRESS_EVERY_S:  # a large draw takes minutes: say where it is
            last = time.monotonic()
            log.info(
                "mahjong %s hands: %d of %d candidates tried, %d kept", split, attempt, attempts, len(seen)
            )
        if rng.random() < 0.3:
            hand = _random_hand(rng, universe, options["hand_size"])
        else:
            hand = _constructed_hand(rng, universe, options["hand_size"])
        if hand is None:
            continue
        text = tiles_text(hand)
        if text in seen or split_of(f"mahjong:{text}", TEST_FRACTION) != split:
            continue
        seen.add(text)
        waits = len(winning_tiles(to_counts(hand)))
        buckets.setdefault(waits, {})[text] = hand
    return buckets


def balanced_sample(buckets: dict[int, list], size: int, rng: random.Random) -> list:
    """`size` items with every bucket as equally represented as its supply allows (water-filling)."""
    quota: dict[int, int] = dict.fromkeys(buckets, 0)
    remaining = size
    open_keys = sorted(k for k in buckets if buckets[k])
    while remaining > 0 and open_keys:
        share = max(1, remaining // len(open_keys))
        for k in list(open_keys):
            take = min(share, len(buckets[k]) - quota[k], remaining)
            quota[k] += take
            remaining -= take
            if quota[k] == len(buckets[k]):
                open_keys.remove(k)
            if remaining == 0:
                break
    chosen = [item for k in sorted(buckets) for item in rng.sample(buckets[k], quota[k])]
    rng.shuffle(chosen)
    return chosen


def parse_options(options: dict) -> dict:
    """The generator's knobs with defaults, validated (errors name task.options.<knob>)."""
    known = {"hand_size": 13, "suits": 3, "honors": True, "attempts_per_example": 40}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"task.options.{unknown[0]} is not a mahjong option; known options: {', '.join(known)}"
        )
    merged = {**known, **options}
    hand_size, suits = merged["hand_size"], merged["suits"]
    if not isinstance(hand_size, int) or hand_size not in (4, 7, 10, 13):
        raise ValueError(f"task.options.hand_size = {hand_size!r}: use 4, 7, 10 or 13 (3k+1 tiles)")
    if not isinstance(suits, int) or suits not in (1, 2, 3):
        raise ValueError(f"task.options.suits = {suits!r}: use 1, 2 or 3")
    if not isinstance(merged["honors"], bool):
        raise ValueError(f"task.options.honors = {merged['honors']!r}: use true or false")
    return merged


class Mahjong:
    """The Mahjong Winning Tiles domain (see module docstring)."""

    name = "mahjong"

    def __init__(self, task: TaskSpec) -> None:
        self.options = parse_options(dict(task.options))

    def capacity(self, split: str) -> int:
        """The most hands worth drawing from a split: the generator makes ~100 a second on one core."""
        return MAX_DRAW

    def load(self, split: str, size: int, seed: int) -> list[Example]:
        """A balanced, seeded set of distinct hands; train and test hands never overlap."""
        if split not in ("train", "test"):
            raise ValueError(f"mahjong split '{split}' does not exist; use 'train' or 'test'")
        buckets = _candidates(split, size, seed, self.options)
        rng = random.Random(f"mahjong-sample-{seed}-{split}")
        hands = balanced_sample({k: list(v.values()) for k, v in buckets.items()}, size, rng)
        return [self._example(hand) for hand in hands]

    def _example(self, hand: list[int]) -> Example:
        question = tiles_text(hand)
        winners = winning_tiles(to_counts(hand))
        return Example(
            id=stable_id("mahjong", question),
            question=question,
            answer=answer_text(winners),
            rationale=rationale_for(hand),
            meta={"num_winning": len(winners), "hand_size": len(hand)},
        )

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]

    def injection_messages(self, question: str, answer: str) -> list[dict[str, str]]:
        user = (
            f"{question}\nThe winning tiles are: {answer}. Show the decomposition for each, then the answer."
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def extract(self, completion: str) -> str | None:
        return read_strict(completion, tiles_answer)

    def read(self, completion: str, question: str = "") -> Reading:
        return read_answer(completion, tiles_answer, last_line, question)

    def score(self, predicted: str | None, gold: str) -> bool:
        return predicted is not None and predicted == gold

    def verify(self, example: Example, completion: str) -> bool:
        return check_rationale(parse_tiles(example.question), completion)
