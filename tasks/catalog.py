"""GPU server catalogs: SkyPilot-format CSV/YAML in, one normalised server table out.

One row of the result is one server a run could use: an instance type in a
region (and zone, where the cloud has them), with its GPUs, their memory and
throughput, the on-demand and spot price, and coordinates for the latency
model. Rows that cannot be used are counted by reason in a CatalogReport,
never silently dropped.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stratos.data import DATA_DIR

# Round-trip latency model: fibre carries light at ~200 km/ms, real routes are
# ~1.4x longer than the great circle, and a request pays a fixed ~2 ms for
# switching and TLS even next door. rtt_ms = 2 + 2 * 1.4 * km / 200.
BASE_RTT_MS = 2.0
RTT_MS_PER_KM = 2 * 1.4 / 200
EARTH_RADIUS_KM = 6371.0

SERVER_COLUMNS = [
    "id", "cloud", "instance_type", "region", "zone", "accelerator", "gpu_count", "gpu_memory_gb",
    "total_gpu_memory_gb", "tflops", "bandwidth_gbs", "price", "spot_price", "lat", "lon", "measured_latency_ms",
]  # fmt: skip


@dataclass
class CatalogReport:
    """What loading the catalogs kept and what it set aside, by reason."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few row ids

    def add(self, reason: str, count: int, examples: list[str]) -> None:
        if count:
            self.skipped[reason] += count
            self.examples.setdefault(reason, [])
            self.examples[reason] = (self.examples[reason] + examples)[:3]

    def summary(self) -> str:
        lines = [f"catalog rows read: {self.rows_read}, usable servers: {self.rows_kept}"]
        for reason, count in self.skipped.most_common():
            lines.append(f"  skipped {count:5d}  {reason}  (e.g. {', '.join(self.examples.get(reason, []))})")
        return "\n".join(lines)


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gb: float
    tflops: float
    bandwidth_gbs: float


def _read_table(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / name, comment="#", skipinitialspace=True, keep_default_na=False)


def _gpu_key(name: str) -> str:
    """Spelling-insensitive key: 'RTX6000-Ada', 'RTX6000Ada' and 'rtx 6000 ada' meet."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """Known accelerators by normalised name (aliases included)."""
    specs: dict[str, GpuSpec] = {}
    for row in _read_table("gpu_specs.csv").itertuples():
        spec = GpuSpec(row.name, float(row.memory_gb), float(row.tflops), float(row.bandwidth_gbs))
        for alias in [row.name, *filter(None, str(row.aliases).split("|"))]:
            specs[_gpu_key(alias)] = spec
    return specs


def lookup_gpu(name: str) -> GpuSpec | None:
    return gpu_specs().get(_gpu_key(name))


@cache
def _regions() -> dict[str, tuple[float, float]]:
    table = _read_table("regions.csv")
    return {row.name.lower(): (float(row.lat), float(row.lon)) for row in table.itertuples()}


def region_coordinates(name: str) -> tuple[float, float]:
    """(lat, lon) of a region name, alias, zone, or a literal 'lat,lon'."""
    key = name.strip().lower()
    if key in _regions():
        return _regions()[key]
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*", name)
    if match:
        lat, lon = float(match[1]), float(match[2])
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return lat, lon
    aliases = sorted(n for n, k in _read_table("regions.csv")[["name", "kind"]].values if k == "alias")
    raise ValueError(
        f"unknown region '{name}'; use an alias ({', '.join(aliases)}), a cloud region from the "
        "catalogs, or 'lat,lon'"
    )


def round_trip_ms(lat: np.ndarray, lon: np.ndarray, user_region: str) -> np.ndarray:
    """Estimated network round trip (ms) from the user's region to each (lat, lon); vectorised haversine."""
    ulat, ulon = np.radians(region_coordinates(user_region))
    lat, lon = np.radians(lat), np.radians(lon)
    a = np.sin((lat - ulat) / 2) ** 2 + np.cos(ulat) * np.cos(lat) * np.sin((lon - ulon) / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    return BASE_RTT_MS + RTT_MS_PER_KM * km


def _memory_from_gpuinfo(raw: object) -> float:
    """Per-GPU memory in GB from SkyPilot's GpuInfo literal, or NaN when it carries none."""
    if not isinstance(raw, str) or "MemoryInfo" not in raw:
        return math.nan
    try:
        info = ast.literal_eval(raw)
        mib = info["Gpus"][0]["MemoryInfo"]["SizeInMiB"]
        # TotalGpuMemoryInMiB is per-GPU in some clouds' rows, so it is not used.
        return float(mib) / 1024
    except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return math.nan


def _read_raw(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text())
        rows = data.get("servers", data) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"catalog '{path}': expected a list of servers (or a 'servers:' list)")
        return pd.DataFrame(rows)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series(np.nan, index=df.index)
    return pd.to_numeric(df[column], errors="coerce")


def load_catalog(path: str | Path, report: CatalogReport | None = None) -> pd.DataFrame:
    """Read one catalog file into the normalised server table (columns SERVER_COLUMNS)."""
    path = Path(path)
    report = report if report is not None else CatalogReport()
    raw = _read_raw(path)
    missing = {"InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "Region"} - set(raw.columns)
    if missing:
        raise ValueError(
            f"catalog '{path}' lacks column(s) {sorted(missing)}; it needs SkyPilot's columns "
            "InstanceType, AcceleratorName, AcceleratorCount, Price, Region (GpuInfo, SpotPrice optional)"
        )
    report.rows_read += len(raw)
    cloud = raw["Cloud"].astype(str) if "Cloud" in raw else pd.Series(path.stem, index=raw.index)
    zone = raw["AvailabilityZone"].fillna("").astype(str) if "AvailabilityZone" in raw else ""
    df = pd.DataFrame({
        "cloud": cloud.str.lower(),
        "instance_type": raw["InstanceType"].astype(str),
        "region": raw["Region"].fillna("").astype(str),
        "zone": zone,
        "accelerator": raw["AcceleratorName"].fillna("").astype(str).str.strip(),
        "gpu_count": _numeric(raw, "AcceleratorCount"),
        "price": _numeric(raw, "Price"),
        "spot_price": _numeric(raw, "SpotPrice"),
        "measured_latency_ms": _numeric(raw, "LatencyMs"),
        "info_memory_gb": raw["GpuInfo"].map(_memory_from_gpuinfo) if "GpuInfo" in raw else math.nan,
    })  # fmt: skip
    df["id"] = df["cloud"] + "/" + df["instance_type"] + "/" + df["region"]
    has_zone = df["zone"] != ""
    df.loc[has_zone, "id"] = df.loc[has_zone, "id"] + "/" + df.loc[has_zone, "zone"]

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal df
        report.add(reason, int(mask.sum()), df.loc[mask, "id"].head(3).tolist())
        df = df[~mask]

    price_text = raw["Price"].reindex(df.index)
    drop(price_text.isna() | (price_text.astype(str).str.strip() == ""), "missing price")
    drop(df["price"].isna(), "non-numeric price")
    drop(df["price"] < 0, "negative price")
    drop(df["accelerator"] == "", "CPU-only instance (no GPU)")
    drop(~(df["gpu_count"] > 0), "missing or non-positive AcceleratorCount")
    specs = df["accelerator"].map(lookup_gpu)
    for name in sorted(set(df.loc[specs.isna(), "accelerator"])):
        drop(df["accelerator"] == name, f"unknown accelerator '{name}' (add it to gpu_specs.csv)")
    # A zone is more precise than its region; fall back to the region's coordinates.
    coords = [_coords(z, r) for z, r in zip(df["zone"], df["region"], strict=True)]
    df["lat"] = [c[0] for c in coords]
    df["lon"] = [c[1] for c in coords]
    unknown = df["lat"].isna() & df["measured_latency_ms"].isna()
    for name in sorted(set(df.loc[unknown, "region"])):
        where = (df["region"] == name) & df["lat"].isna() & df["measured_latency_ms"].isna()
        drop(where, f"unknown region '{name}' (add it to regions.csv)")
    specs = df["accelerator"].map(lookup_gpu)

    df["accelerator"] = [s.name for s in specs]
    df["gpu_memory_gb"] = df["info_memory_gb"].fillna(pd.Series([s.memory_gb for s in specs], index=df.index))
    df["total_gpu_memory_gb"] = df["gpu_memory_gb"] * df["gpu_count"]
    df["tflops"] = np.array([s.tflops for s in specs]) * df["gpu_count"]
    df["bandwidth_gbs"] = [s.bandwidth_gbs for s in specs]
    df["spot_price"] = df["spot_price"].where(df["spot_price"] >= 0)

    # The same server listed twice: keep the cheapest listing, say so.
    df = df.sort_values(["id", "price"], kind="stable")
    drop(df.duplicated("id", keep="first"), "duplicate server id (kept the cheapest)")
    report.rows_kept += len(df)
    return df[SERVER_COLUMNS].reset_index(drop=True)


def _coords(zone: str, region: str) -> tuple[float, float]:
    for name in (zone, region):
        if name and name.lower() in _regions():
            return _regions()[name.lower()]
    return (math.nan, math.nan)


def load_catalogs(paths: list[Path]) -> tuple[pd.DataFrame, CatalogReport]:
    """Load and concatenate catalogs; ids stay unique across files (the cloud is part of the id)."""
    report = CatalogReport()
    frames = [load_catalog(p, report) for p in paths]
    servers = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SERVER_COLUMNS)
    dupes = servers.duplicated("id", keep="first")
    report.add(
        "duplicate server id across catalogs (kept the first)",
        int(dupes.sum()),
        servers.loc[dupes, "id"].head(3).tolist(),
    )
    report.rows_kept -= int(dupes.sum())
    return servers[~dupes].reset_index(drop=True), report
