"""Task domains: data, prompts, answer extraction, scoring, verifiers.

`get_domain(task)` is the one entry point; see base.py for what a domain does.
"""

from __future__ import annotations

from stratos.domains.arithmetic import Arithmetic
from stratos.domains.base import Domain, Example
from stratos.domains.custom import Custom
from stratos.domains.gsm8k import GSM8K
from stratos.domains.mahjong import Mahjong
from stratos.spec import TaskSpec

DOMAINS: dict[str, type] = {"gsm8k": GSM8K, "mahjong": Mahjong, "arithmetic": Arithmetic, "custom": Custom}

__all__ = ["DOMAINS", "Domain", "Example", "get_domain"]


def get_domain(task: TaskSpec) -> Domain:
    """The domain a task names, built from its options (bad options fail here, naming the field)."""
    return DOMAINS[task.domain](task)
