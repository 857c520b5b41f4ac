"""Which accelerator a catalog row names, and its figures, resolved in layers recorded with the row.

gpu_specs.csv (published memory, dense bf16 TFLOPS and bandwidth) is the first source; a name is
resolved by the first layer that knows it:

  exact    the name, spelling-insensitive, is a name or a listed alias in gpu_specs.csv;
  alias    it is after dropping vendor words and packaging (NVIDIA, GeForce, Tesla; PCIe, SXM4, HBM3)
           and, failing that, a memory size, which then is the part's memory ('RTX PRO 6000 96GB' is
           the RTX PRO 6000; 'V100-32G' a V100 with 32 GB);
  family   a Ti / Super / S variant of a listed part: that part's throughput and bandwidth. Variants
           are a little faster than their base, so this errs low;
  gpuinfo  an unknown part whose memory the catalog's GpuInfo gives: throughput and bandwidth fall back
           to GPU memory, times the lowest TFLOPS and GB/s per GB of any part in gpu_specs.csv. The same
           floor holds for every such row in every catalog, so an unknown part never looks faster than
           a known part with as much memory; the report counts these rows.

An unknown part without GpuInfo memory cannot be sized for a model, so its row is set aside and
counted by reason. Wherever GpuInfo gives memory, it wins over the table's (a part ships in several
memory sizes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import pandas as pd

from stratos.data import DATA_DIR

LAYERS = ("exact", "alias", "family", "gpuinfo")
_VENDOR = re.compile(r"nvidia|geforce|tesla|quadro|amd|radeon|instinct|intel")
_PACKAGING = re.compile(r"pcie|sxm\d?|hbm\d?e?|gddr\d?x?|nvlink")  # whole words only
_MEMORY = re.compile(r"\d+(gb|gib|g)")  # a whole word: '80GB' in 'A100 80GB', not the 6000 of RTX 6000
_VARIANT = re.compile(r"(ti|super|s)$")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gb: float
    tflops: float
    bandwidth_gbs: float


def _gpu_key(name: str) -> str:
    """Spelling-insensitive key: 'RTX6000-Ada', 'RTX6000Ada' and 'rtx 6000 ada' meet."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """Known accelerators by normalised name (aliases included)."""
    table = pd.read_csv(DATA_DIR / "gpu_specs.csv", comment="#", skipinitialspace=True, keep_default_na=False)
    specs: dict[str, GpuSpec] = {}
    for row in table.itertuples():
        spec = GpuSpec(row.name, float(row.memory_gb), float(row.tflops), float(row.bandwidth_gbs))
        for alias in [row.name, *filter(None, str(row.aliases).split("|"))]:
            specs[_gpu_key(alias)] = spec
    return specs


def lookup_gpu(name: str) -> GpuSpec | None:
    return gpu_specs().get(_gpu_key(name))


@cache
def floors() -> tuple[float, float]:
    """(TFLOPS per GB, GB/s per GB): the lowest of any listed part, for parts only GpuInfo describes."""
    specs = set(gpu_specs().values())
    return (min(s.tflops / s.memory_gb for s in specs), min(s.bandwidth_gbs / s.memory_gb for s in specs))


def _alias_keys(name: str) -> list[str]:
    """Candidate keys without vendor words and packaging, then also without a memory size."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and not _VENDOR.fullmatch(w)]
    bare = [w for w in words if not _PACKAGING.fullmatch(w)]
    no_memory = [w for w in bare if not _MEMORY.fullmatch(w)]
    keys = [_strip_vendor("".join(w)) for w in (words, bare, no_memory)]
    return [k for k in dict.fromkeys(keys) if k]


def _with_named_memory(spec: GpuSpec, name: str) -> GpuSpec:
    """The part with the memory its name states, if it states one ('V100-32G' is the 32 GB V100)."""
    sizes = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if _MEMORY.fullmatch(w)]
    if not sizes:
        return spec
    return GpuSpec(spec.name, float(re.match(r"\d+", sizes[-1])[0]), spec.tflops, spec.bandwidth_gbs)


def _strip_vendor(key: str) -> str:
    """'geforcertx4090' -> 'rtx4090': vendor words run together with the model."""
    while (match := _VENDOR.match(key)) and len(key) > match.end():
        key = key[match.end() :]
    return key


@cache
def resolve_gpu(name: str) -> tuple[GpuSpec | None, str]:
    """(spec, layer) for an accelerator name; (None, 'gpuinfo') when no table entry fits."""
    specs = gpu_specs()
    if _gpu_key(name) in specs:
        return specs[_gpu_key(name)], "exact"
    keys = _alias_keys(name)
    for key in keys:
        if key in specs:
            return _with_named_memory(specs[key], name), "alias"
    for key in keys:
        base = key
        while _VARIANT.search(base) and len(base) > 3:
            base = _VARIANT.sub("", base)
            if base in specs:
                return specs[base], "family"
    return None, "gpuinfo"
