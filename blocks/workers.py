"""Which Prefect work pool runs a server's GPU stages, as a Prefect Block.

A worker started on a GPU server polls one work pool (optionally one queue in
it); the flow dispatches a stage there with `run_deployment`. This block maps
servers from the catalogs to those pools. Lookup order for a server:

1. `pools[server_id]`, the exact catalog id (`cloud/instance_type/region`);
2. otherwise the longest key of `pools` that is a glob (fnmatch) matching the
   server id or `cloud:accelerator`, e.g. `lambda/*`, `runpod:H100*`, `*:A10G`;
3. otherwise `naming_convention` filled with slugs of the server's fields:
   the default `stratos-{cloud}-{accelerator}` names the pool for an H100 on
   Lambda `stratos-lambda-h100`. An empty convention means "no pool": the
   stage runs in-process (the embedded default).

A pool value is `pool` or `pool/queue`.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import NamedTuple

from prefect.blocks.core import Block
from pydantic import Field, field_validator

DEFAULT_CONVENTION = "stratos-{cloud}-{accelerator}"
_FIELDS = ("cloud", "accelerator", "region", "instance_type")


class WorkTarget(NamedTuple):
    """A Prefect work pool and, optionally, one of its queues."""

    pool: str
    queue: str | None = None


def slug(text: str) -> str:
    """Lower-case, with runs of anything but letters and digits turned into one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _target(value: str) -> WorkTarget:
    pool, _, queue = value.partition("/")
    return WorkTarget(pool, queue or None)


class WorkerPoolBlock(Block):
    """Maps GPU servers (by id or cloud:accelerator pattern) to the Prefect work pools their workers poll."""

    _block_type_name = "Stratos Worker Pools"
    _block_type_slug = "stratos-worker-pools"

    pools: dict[str, str] = Field(
        default_factory=dict,
        description="Server id or glob over the id or 'cloud:accelerator' -> 'pool' or 'pool/queue'.",
    )
    naming_convention: str = Field(
        DEFAULT_CONVENTION,
        description="Pool name for unmapped servers; placeholders {cloud} {accelerator} {region} "
        "{instance_type}. Empty: unmapped servers run stages in-process.",
    )

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, target in value.items():
            pool, _, queue = target.partition("/")
            if not pool or "/" in queue or target.endswith("/"):
                raise ValueError(
                    f"pools[{key!r}] = {target!r} is not 'pool' or 'pool/queue'; e.g. 'gpu-a100/high'"
                )
        return value

    @field_validator("naming_convention")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"naming_convention {value!r} uses an unknown placeholder ({err}); "
                f"use only {{{'}, {'.join(_FIELDS)}}}, e.g. {DEFAULT_CONVENTION!r}"
            ) from None
        return value

    def lookup(self, server_id: str, accelerator: str = "") -> WorkTarget | None:
        """The work pool for a catalog server, or None when it has none (run in-process)."""
        cloud, instance_type, region = ([*server_id.split("/", 2), "", ""])[:3]
        if server_id in self.pools:
            return _target(self.pools[server_id])
        names = (server_id, f"{cloud}:{accelerator}")
        matches = [p for p in self.pools if any(fnmatchcase(n, p) for n in names)]
        if matches:
            return _target(self.pools[max(matches, key=len)])
        if not self.naming_convention:
            return None
        fields = {
            "cloud": cloud,
            "accelerator": accelerator,
            "region": region,
            "instance_type": instance_type,
        }
        return WorkTarget(self.naming_convention.format(**{k: slug(v) for k, v in fields.items()}))
