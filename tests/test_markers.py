"""Test tiers: `-m "not integration"` is the fast local tier and still leaves the slow, GPU and e2e tests out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import default_selection

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "not slow and not gpu and not e2e",
            "not slow and not gpu and not e2e",
        ),  # pyproject's default: as is
        ("not integration", "(not integration) and not slow and not gpu and not e2e"),
        ("integration or serve", "(integration or serve) and not slow and not gpu and not e2e"),
        ("slow", "slow"),  # naming a default-excluded marker decides for itself
        ("e2e", "e2e"),  # the tier .ci/run runs after the default suite
        ("gpu and not integration", "gpu and not integration"),
        ("", ""),  # -m "": everything, on purpose
    ],
)
def test_an_expression_without_slow_gpu_or_e2e_keeps_them_out(given, used):
    assert default_selection(given) == used


def test_the_fast_tier_collects_no_slow_test():
    """Wired into pytest: under -m 'not integration' a module whose every test is slow yields nothing,
    while an unmarked module next to it is collected."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    modules = ["tests/test_strategy_modes.py", "tests/test_threads.py"]  # all slow; none marked
    done = subprocess.run(
        [*cmd, "-m", "not integration", *modules], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "test_threads.py::" in done.stdout and "deselected" in done.stdout, done.stdout[-2000:]
    assert "test_strategy_modes.py::" not in done.stdout, done.stdout[-2000:]
