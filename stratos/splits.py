"""Which questions go to train, probe and test: drawn deterministically, checked before any work.

Train and probe come from the domain's train split and never share a question; test comes
from its held-out split and shares no question with either. Questions are de-duplicated
before they are counted, so a file of 300 copies of one question is one question. A file-backed
domain (custom, gsm8k) gives at most its rows, whatever is asked, and is read whole; a
generated domain (arithmetic, mahjong) is asked for at most its `capacity`, because its
generator runs longer the more it is asked for, and asking for more than it holds would run
for hours to find nothing new.

`check_splits` is what the preflight runs: a file's every row is read and checked, a
generator's request is compared with what it can give. tasks/prepare_data.py writes the splits.
"""

from __future__ import annotations

import logging
import random

from stratos.domains import get_domain
from stratos.domains.base import Domain, Example
from stratos.spec import TaskSpec

log = logging.getLogger(__name__)

WHOLE_FILE = 1 << 62  # "every row": a file-backed domain's load() slices its shuffled rows to the size


def draw_splits(task: TaskSpec) -> dict[str, list[Example]]:
    """Deterministic train / probe / test examples; probe is disjoint from both others."""
    domain = get_domain(task)
    sizes, notes = capped_sizes(task, domain)
    for note in notes:
        log.warning(note)
    test = _distinct(domain.load("test", sizes["test"], task.seed))[: task.test_size]
    held_out = {e.question for e in test}
    drawn = domain.load("train", sizes["pool"], task.seed)
    # A user's own splits may overlap; a test question must never be trained or probed on.
    pool = [e for e in _distinct(drawn) if e.question not in held_out]
    if len(pool) <= task.probe_size:
        raise ValueError(too_few_questions(task, drawn, pool))
    if not test:
        raise ValueError(f"the {task.domain} test split is empty; give data with a test split or more rows")
    random.Random(f"probe-{task.seed}").shuffle(pool)
    probe, train = pool[: task.probe_size], pool[task.probe_size :][: task.train_size]
    return {"train": train, "probe": probe, "test": test}


def capped_sizes(task: TaskSpec, domain: Domain) -> tuple[dict[str, int], list[str]]:
    """How many test and train+probe questions to ask the domain for, and a warning for each cap."""
    capacity = getattr(domain, "capacity", None)
    if capacity is None:  # a file: read it whole, de-duplicate, then take what the spec asks for
        return {"test": WHOLE_FILE, "pool": WHOLE_FILE}, []
    sizes = {"test": task.test_size, "pool": task.train_size + task.probe_size}
    notes = []
    for key, split, fields in (
        ("test", "test", "task.test_size"),
        ("pool", "train", "task.train_size + probe_size"),
    ):
        most = capacity(split)
        if sizes[key] > most:
            notes.append(
                f"{fields} = {sizes[key]:,} is more than the {most:,} questions the {task.domain} {split} "
                f"split can give with these options; drawing {most:,} (lower it to silence this)"
            )
            sizes[key] = most
    return sizes, notes


def too_few_questions(task: TaskSpec, drawn: list[Example], pool: list[Example]) -> str:
    """Why the train split cannot fill the probe: too few rows, duplicates, or overlap with the test split."""
    distinct = len({e.question for e in drawn})
    why = f"the {task.domain} train split has {len(drawn):,} row(s)"
    if distinct < len(drawn):
        why += f", which de-duplicate to {distinct:,} distinct question(s)"
    if len(pool) < distinct:
        why += f", {distinct - len(pool):,} of them also in the test split, leaving {len(pool):,}"
    fix = (
        f"lower task.probe_size below {len(pool):,} or give more distinct questions"
        if len(pool) > 1
        else "give more distinct questions (the probe and training need at least two)"
    )
    return f"task.probe_size = {task.probe_size:,} leaves no training questions: {why}; {fix}"


def check_splits(task: TaskSpec) -> list[str]:
    """The preflight's data check: what draw_splits would refuse, in a second; returns warnings."""
    domain = get_domain(task)
    _, notes = capped_sizes(task, domain)
    capacity = getattr(domain, "capacity", None)
    if capacity is None:
        draw_splits(task)  # every row read and checked: columns, empty cells, lengths, enough questions
        return notes
    domain.load("test", 1, task.seed)  # the options work
    if task.probe_size >= capacity("train"):
        raise ValueError(
            f"task.probe_size = {task.probe_size:,} leaves no training questions: the {task.domain} train "
            f"split can give at most {capacity('train'):,} with these options; lower task.probe_size or "
            "change task.options for more distinct questions"
        )
    return notes


def _distinct(examples: list[Example]) -> list[Example]:
    seen: set[str] = set()
    kept = []
    for e in examples:
        if e.question not in seen:
            seen.add(e.question)
            kept.append(e)
    return kept
