"""One ledger for every dollar a job spends, and the guard that stops a run before it overspends.

The budget (constraints.budget_usd) is the whole job's: probes, pre-screen, synthesis, training,
evaluation and serving start-up together. Every stage charges the ledger as it spends:

    API calls        tokens from the endpoint's `usage` blocks x the teacher's prices
    GPU stages       wall seconds x the chosen server's $/h (a run in this process is priced at the
                     chosen server's rate, and its entries say so)
    stored answers   $0: replayed completions were paid for when they were recorded

The ledger lives in the artifact store as ledgers/<run name>.json, so a re-run of the same spec
(same name) reads what earlier runs spent and a remote worker charges the same ledger. Entries
have ids (stage, work key, unit), so charging is idempotent: a resumed synthesis never charges
the chunks an interrupted run already paid for, and a cached stage charges nothing.

Before each unit of work (a synthesis chunk, a training checkpoint interval, an evaluation) a
stage asks the guard whether the planned cost of that unit fits what is left; if not it raises
BudgetExhausted after keeping what it made (traces accepted, the last checkpoint), and the flow
ends the run as `budget_exhausted`. Running again with a higher budget resumes.
No secret reaches the ledger: entries hold names, counts and dollars only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stratos.storage import StorageError, from_uri

log = logging.getLogger(__name__)

Basis = Literal["api", "gpu", "in-process", "stored"]


class Entry(BaseModel):
    """One charge: what was paid for, how much, and on what basis."""

    id: str = Field(description="stage:key:unit; charging the same id twice changes nothing")
    stage: str
    item: str = Field(description="What the money bought, e.g. 'chunk 3 (32 questions)' or 'steps 200-400'.")
    usd: float
    basis: Basis
    note: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class BudgetExhausted(RuntimeError):
    """The next unit of work would overspend the budget; what was made so far is kept."""

    def __init__(self, stage: str, spent: float, remaining: float, next_usd: float, budget: float) -> None:
        self.stage, self.spent, self.remaining, self.next_usd, self.budget = (
            stage,
            spent,
            remaining,
            next_usd,
            budget,
        )
        super().__init__(
            f"budget exhausted before more {stage}: ${spent:.4f} of ${budget:g} spent, ${remaining:.4f} left, "
            f"the next step would cost ~${next_usd:.4f}. What was made is kept; raise constraints.budget_usd, "
            "or lower task.train_size / strategy.num_samples, and run again to resume"
        )

    def to_dict(self) -> dict[str, float | str]:
        return {
            "stage": self.stage,
            "spent": self.spent,
            "remaining": self.remaining,
            "next_usd": self.next_usd,
            "budget": self.budget,
        }


class Budget(BaseModel):
    """Where the ledger is and what the job may spend; handed to every stage that spends."""

    model_config = ConfigDict(frozen=True)

    store_uri: str
    name: str = Field(description="The run name: one ledger per spec name.")
    budget_usd: float
    price_per_hour: float = Field(description="The chosen server's $/h, for GPU time.")
    server_id: str
    in_process: bool = Field(True, description="GPU stages run here, priced at the chosen server's rate.")

    @property
    def gpu_basis(self) -> Basis:
        return "in-process" if self.in_process else "gpu"

    def gpu_usd(self, seconds: float) -> float:
        return seconds / 3600 * self.price_per_hour

    def gpu_note(self) -> str:
        where = "this machine" if self.in_process else self.server_id
        return f"{where} priced at {self.server_id}'s ${self.price_per_hour:g}/h"

    def ledger(self) -> Ledger:
        return Ledger.load(self)


class Ledger(BaseModel):
    """The entries of one job, in order."""

    name: str
    budget_usd: float
    entries: list[Entry] = Field(default_factory=list)
    path: str = Field("", exclude=True)
    store_uri: str = Field("", exclude=True)

    @classmethod
    def load(cls, budget: Budget) -> Ledger:
        key = f"ledgers/{budget.name}.json"
        try:
            data = from_uri(budget.store_uri).get_json(key)
        except (FileNotFoundError, KeyError, StorageError):
            data = {"name": budget.name, "budget_usd": budget.budget_usd}
        ledger = cls.model_validate({**data, "budget_usd": budget.budget_usd})
        ledger.path, ledger.store_uri = key, budget.store_uri
        return ledger

    @property
    def spent(self) -> float:
        return sum(e.usd for e in self.entries)

    @property
    def remaining(self) -> float:
        return self.budget_usd - self.spent

    def charge(self, entry: Entry) -> Entry:
        """Add an entry (once per id) and persist the ledger."""
        if any(e.id == entry.id for e in self.entries):
            return entry
        self.entries.append(entry)
        from_uri(self.store_uri).put_json(self.path, self.model_dump(mode="json"))
        log.info(
            "ledger: %s %s $%.4f (%s), $%.4f of $%g spent",
            entry.stage,
            entry.item,
            entry.usd,
            entry.basis,
            self.spent,
            self.budget_usd,
        )
        return entry

    def check(self, stage: str, next_usd: float) -> None:
        """Raise BudgetExhausted when `next_usd` does not fit what is left."""
        if next_usd > self.remaining + 1e-12:
            raise BudgetExhausted(stage, self.spent, self.remaining, next_usd, self.budget_usd)

    def summary(self, planned_usd: float | None = None) -> dict[str, object]:
        by_stage: dict[str, float] = {}
        for e in self.entries:
            by_stage[e.stage] = by_stage.get(e.stage, 0.0) + e.usd
        return {
            "budget_usd": self.budget_usd,
            "spent_usd": round(self.spent, 6),
            "remaining_usd": round(self.remaining, 6),
            "planned_usd": planned_usd,
            "by_stage": {k: round(v, 6) for k, v in by_stage.items()},
            "entries": [e.model_dump(mode="json") for e in self.entries],
        }


def spend_entry(entry_id: str, stage: str, item: str, kind: str, result: Any, budget: Budget) -> Entry:
    """The charge for generating with a model of `kind` (hf, openai, stored), from what the harness measured.

    `result` is a stratos.evaluation.EvalResult (or anything with cost_usd, seconds, prompt_tokens and
    completion_tokens): API models cost what their usage says, local ones their seconds at the server's rate.
    """
    if kind == "openai":
        usd, basis, note = result.cost_usd, "api", "tokens x the model's prices"
    elif kind == "stored":
        usd, basis, note = 0.0, "stored", "recorded completions, paid for when recorded"
    else:
        usd, basis, note = budget.gpu_usd(result.seconds), budget.gpu_basis, budget.gpu_note()
    return Entry(
        id=entry_id,
        stage=stage,
        item=item,
        usd=usd,
        basis=basis,
        note=note,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        seconds=result.seconds,
    )
