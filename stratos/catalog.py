"""GPU server catalogs: SkyPilot-format CSV/YAML in, one normalised server table out.

One row of the result is one server a run could use: an instance type in a
region (and zone, where the cloud has them), with its GPUs, their memory and
throughput, the on-demand and spot price, and coordinates for the latency
model. Where the server is and what its accelerator can do are resolved in
layers (stratos/locations.py, stratos/accelerators.py) and each row records
its layers in `location_source` and `hardware_source`. A row whose location is
unknown is kept: its latency is the worst case (assumed_latency_ms). Rows that
cannot be used at all are counted by reason in a CatalogReport, never silently
dropped, and the report warns when they are more than a few percent of the GPU rows.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stratos.accelerators import GpuSpec, floors, gpu_specs, lookup_gpu, resolve_gpu
from stratos.files import read_utf8
from stratos.locations import region_aliases, resolve_row, user_region

__all__ = ["GpuSpec", "gpu_specs", "lookup_gpu"]  # re-exported: callers size servers from here

# Round-trip latency model: fibre carries light at ~200 km/ms, real routes are
# ~1.4x longer than the great circle, and a request pays a fixed ~2 ms for
# switching and TLS even next door. rtt_ms = 2 + 2 * 1.4 * km / 200.
BASE_RTT_MS = 2.0
RTT_MS_PER_KM = 2 * 1.4 / 200
EARTH_RADIUS_KM = 6371.0
# The farthest any server can be: the far side of the Earth (282 ms by the model above).
ANTIPODAL_RTT_MS = BASE_RTT_MS + RTT_MS_PER_KM * math.pi * EARTH_RADIUS_KM

CPU_ONLY = "CPU-only instance (no GPU)"
# `stratos plan` warns on the terminal above this share of unusable GPU rows.
WARN_UNUSABLE_SHARE = 0.03
# What to do about a skipped row, for reasons whose text does not already say.
FIXES = {
    "missing price": "give every row a Price in USD per hour",
    "non-numeric price": "Price must be a number in USD per hour",
    "negative price": "Price must be zero or more (USD per hour)",
    "missing or non-positive AcceleratorCount": "give GPU rows an AcceleratorCount of 1 or more",
}
# A spot price of 0 (vast) or 99999999 (primeintellect) means "no spot offer", not a price.
MAX_SPOT_TO_ON_DEMAND = 10.0
# GpuInfo memory "fits" a listed part within this relative error (H100 NVL's 94 GB vs H100's 80 is 18%).
GPUINFO_FIT = 0.25

SERVER_COLUMNS = [
    "id",
    "cloud",
    "instance_type",
    "region",
    "zone",
    "accelerator",
    "gpu_count",
    "gpu_memory_gb",
    "total_gpu_memory_gb",
    "tflops",
    "bandwidth_gbs",
    "price",
    "spot_price",
    "lat",
    "lon",
    "measured_latency_ms",
    "location_source",  # exact | parsed | centroid | assumed (stratos/locations.py)
    "location",  # what the region string was read as: 'Frankfurt, DE', 'Canada', ''
    "hardware_source",  # exact | alias | family | gpuinfo (stratos/accelerators.py)
]


@dataclass
class CatalogReport:
    """What loading the catalogs kept, how each kept row was resolved, and what it set aside, by reason."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few row ids
    location_layers: Counter = field(default_factory=Counter)  # layer -> kept servers
    hardware_layers: Counter = field(default_factory=Counter)
    assumed_regions: Counter = field(default_factory=Counter)  # region text -> servers with latency assumed
    notes: list[str] = field(default_factory=list)

    def add(self, reason: str, count: int, examples: list[str]) -> None:
        if count:
            self.skipped[reason] += count
            self.examples.setdefault(reason, [])
            self.examples[reason] = (self.examples[reason] + examples)[:3]

    @property
    def gpu_rows(self) -> int:
        return self.rows_read - self.skipped[CPU_ONLY]

    def unusable(self) -> Counter:
        """GPU rows set aside for a defect (CPU-only rows and merged duplicates are not defects)."""
        return Counter(
            {r: c for r, c in self.skipped.items() if r != CPU_ONLY and not r.startswith("duplicate")}
        )

    def warnings(self) -> list[str]:
        """Loud lines for the terminal when more than WARN_UNUSABLE_SHARE of the GPU rows are unusable."""
        bad = sum(self.unusable().values())
        if not self.gpu_rows or bad <= WARN_UNUSABLE_SHARE * self.gpu_rows:
            return []
        lines = [f"{bad} of {self.gpu_rows} GPU rows ({bad / self.gpu_rows:.1%}) are unusable; top reasons:"]
        for reason, count in self.unusable().most_common(5):
            fix = FIXES.get(reason)
            lines.append(f"  {count:5d}  {reason}" + (f": {fix}" if fix else ""))
        return lines

    def summary(self) -> str:
        cpu = self.skipped[CPU_ONLY]
        lines = [
            f"catalog rows read: {self.rows_read} ({self.gpu_rows} with GPUs, {cpu} CPU-only), "
            f"usable servers: {self.rows_kept}",
            "  location: " + _layer_counts(self.location_layers, ("exact", "parsed", "centroid", "assumed")),
            "  hardware: " + _layer_counts(self.hardware_layers, ("exact", "alias", "family", "gpuinfo")),
        ]
        assumed = sum(self.assumed_regions.values())
        if assumed:
            shown = ", ".join(f"'{r}' x{c}" for r, c in self.assumed_regions.most_common(3))
            lines.append(
                f"  {assumed} servers rest on an assumed location ({shown}): their round trip is taken as "
                f"the worst case, {ANTIPODAL_RTT_MS:.0f} ms; give them a LatencyMs column or a region "
                "regions.csv knows"
            )
        if self.hardware_layers["gpuinfo"]:
            tflops_per_gb, _ = floors()
            lines.append(
                f"  {self.hardware_layers['gpuinfo']} servers have an accelerator only GpuInfo describes: "
                f"their throughput falls back to GPU memory x {tflops_per_gb:g} TFLOPS/GB (a floor); "
                "add the part to gpu_specs.csv"
            )
        lines += [f"  note: {n}" for n in self.notes]
        for reason, count in self.skipped.most_common():
            lines.append(f"  skipped {count:5d}  {reason}  (e.g. {', '.join(self.examples.get(reason, []))})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """The `catalog` object of `stratos plan --json`."""
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "gpu_rows": self.gpu_rows,
            "cpu_only_rows": self.skipped[CPU_ONLY],
            "unusable_gpu_rows": sum(self.unusable().values()),
            "skipped": dict(self.skipped),
            "location_layers": dict(self.location_layers),
            "hardware_layers": dict(self.hardware_layers),
            "assumed_location_servers": sum(self.assumed_regions.values()),
            "assumed_latency_ms": round(ANTIPODAL_RTT_MS, 1),
            "notes": self.notes,
            "warnings": self.warnings(),
        }


def _layer_counts(counts: Counter, layers: tuple[str, ...]) -> str:
    return ", ".join(f"{counts[layer]} {layer}" for layer in layers if counts[layer]) or "none"


def region_coordinates(name: str) -> tuple[float, float]:
    """(lat, lon) of a user's region: a region name, alias, zone, a 'lat,lon', or a city ('Frankfurt, DE')."""
    coords = user_region(name)
    if coords is not None:
        return coords
    raise ValueError(
        f"unknown region '{name}'; use an alias ({', '.join(region_aliases())}), a cloud region from the "
        "catalogs, a city such as 'Frankfurt, DE', or 'lat,lon'"
    )


def round_trip_ms(lat: np.ndarray, lon: np.ndarray, user_region: str) -> np.ndarray:
    """Estimated network round trip (ms) from the user's region to each (lat, lon); vectorised haversine."""
    ulat, ulon = np.radians(region_coordinates(user_region))
    lat, lon = np.radians(lat), np.radians(lon)
    a = np.sin((lat - ulat) / 2) ** 2 + np.cos(ulat) * np.cos(lat) * np.sin((lon - ulon) / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    return BASE_RTT_MS + RTT_MS_PER_KM * km


def assumed_latency_ms(known: np.ndarray) -> float:
    """Round trip for a server whose location is unknown: the far side of the Earth.

    It could be anywhere, so it gets the worst the model can produce (or 1 ms more than the slowest
    known server, if a catalog measured one slower still). Being strictly worse than every known
    server on latency, an unknown-location server can never push a known one off the Pareto front.
    """
    worst_known = float(np.max(known)) + 1.0 if len(known) else 0.0
    return max(ANTIPODAL_RTT_MS, worst_known)


def _gpuinfo(raw: pd.Series) -> pd.Series:
    """Memory in GB from SkyPilot's GpuInfo (`SizeInMiB`, any quoting or case), NaN where it has none."""
    size = raw.astype("string").str.extract(r"(?i)sizeinmib\W*([0-9.]+)", expand=False)
    mib = pd.to_numeric(size, errors="coerce")
    return (mib / 1024).where(mib > 0)


def _read_raw(path: Path) -> pd.DataFrame:
    """The catalog file's rows as text; a file that is not a readable UTF-8 table fails naming it."""
    if path.is_dir():
        raise ValueError(f"catalog '{path}' is a directory, not a file; give the CSV/YAML file inside it")
    text = read_utf8(path, "catalog")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
            rows = data.get("servers", data) if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ValueError(f"catalog '{path}': expected a list of servers (or a 'servers:' list)")
            return pd.DataFrame(rows)
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"catalog '{path}' has no header row (the file is empty or blank); give a CSV with SkyPilot's "
            "columns InstanceType, AcceleratorName, AcceleratorCount, Price, Region"
        ) from None
    except (pd.errors.ParserError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())
        raise ValueError(
            f"catalog '{path}' is not a readable CSV/YAML table ({first}); fix or replace it"
        ) from None


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series(np.nan, index=df.index)
    return pd.to_numeric(df[column], errors="coerce")


def _cloud_name(path: Path) -> str:
    """The file's cloud: its name, or its folder's for SkyPilot's own layout (<cloud>/vms.csv)."""
    return path.parent.name if path.stem == "vms" else path.stem


def _frame(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    cloud = raw["Cloud"].astype(str) if "Cloud" in raw else pd.Series(_cloud_name(path), index=raw.index)
    zone = raw["AvailabilityZone"].fillna("").astype(str) if "AvailabilityZone" in raw else ""
    df = pd.DataFrame(
        {
            "cloud": cloud.str.lower(),
            "instance_type": raw["InstanceType"].astype(str),
            "region": raw["Region"].fillna("").astype(str),
            "zone": zone,
            "accelerator": raw["AcceleratorName"].fillna("").astype(str).str.strip(),
            "gpu_count": _numeric(raw, "AcceleratorCount"),
            "price": _numeric(raw, "Price"),
            "spot_price": _numeric(raw, "SpotPrice"),
            "measured_latency_ms": _numeric(raw, "LatencyMs"),
            "info_memory_gb": _gpuinfo(raw["GpuInfo"]) if "GpuInfo" in raw else math.nan,
            "host_memory_gb": _numeric(raw, "MemoryGiB"),
        }
    )
    df["id"] = df["cloud"] + "/" + df["instance_type"] + "/" + df["region"]
    has_zone = df["zone"] != ""
    df.loc[has_zone, "id"] = df.loc[has_zone, "id"] + "/" + df.loc[has_zone, "zone"]
    return df


def _drop(df: pd.DataFrame, mask: pd.Series, reason: str, report: CatalogReport) -> pd.DataFrame:
    report.add(reason, int(mask.sum()), df.loc[mask, "id"].head(3).tolist())
    return df[~mask]


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
    df = _frame(raw, path)
    price_text = raw["Price"].reindex(df.index)
    df = _drop(df, price_text.isna() | (price_text.astype(str).str.strip() == ""), "missing price", report)
    df = _drop(df, df["price"].isna(), "non-numeric price", report)
    df = _drop(df, df["price"] < 0, "negative price", report)
    df = _drop(df, df["accelerator"] == "", CPU_ONLY, report)
    df = _drop(df, ~(df["gpu_count"] > 0), "missing or non-positive AcceleratorCount", report)
    df = _with_hardware(df, report, path.name)
    df = _with_location(df)
    valid_spot = (df["spot_price"] > 0) & (df["spot_price"] <= MAX_SPOT_TO_ON_DEMAND * df["price"])
    df["spot_price"] = df["spot_price"].where(valid_spot)

    # The same server listed twice: keep the cheapest listing, say so.
    df = df.sort_values(["id", "price"], kind="stable")
    df = _drop(df, df.duplicated("id", keep="first"), "duplicate server id (kept the cheapest)", report)
    _count_layers(df, report)
    return df[SERVER_COLUMNS].reset_index(drop=True)


def _with_hardware(df: pd.DataFrame, report: CatalogReport, name: str) -> pd.DataFrame:
    """Accelerator figures by layer; rows whose part is unknown and whose memory GpuInfo lacks are dropped."""
    resolved = {n: resolve_gpu(n) for n in df["accelerator"].unique()}
    spec = df["accelerator"].map(lambda n: resolved[n][0])
    table_memory = spec.map(lambda s: s.memory_gb if s else math.nan).astype(float)
    info_memory = df["info_memory_gb"]
    if _gpuinfo_is_per_server(info_memory, df["gpu_count"], table_memory, name, report):
        info_memory = info_memory / df["gpu_count"]
    info_memory = _without_host_ram(info_memory, df, table_memory, name, report)
    df = df.assign(
        gpu_memory_gb=info_memory.fillna(table_memory),
        hardware_source=df["accelerator"].map(lambda n: resolved[n][1]),
    )
    unknown = spec.isna() & df["gpu_memory_gb"].isna()
    for part in sorted(set(df.loc[unknown, "accelerator"])):
        mask = (df["accelerator"] == part) & df["gpu_memory_gb"].isna()
        df = _drop(df, mask, f"unknown accelerator '{part}' (add it to gpu_specs.csv)", report)
    spec = spec.reindex(df.index)
    tflops_per_gb, bandwidth_per_gb = floors()
    known = spec.notna()
    df["accelerator"] = df["accelerator"].where(~known, spec.map(lambda s: s.name if s else ""))
    per_gpu_tflops = spec.map(lambda s: s.tflops if s else math.nan).astype(float)
    df["tflops"] = per_gpu_tflops.fillna(df["gpu_memory_gb"] * tflops_per_gb) * df["gpu_count"]
    bandwidth = spec.map(lambda s: s.bandwidth_gbs if s else math.nan).astype(float)
    df["bandwidth_gbs"] = bandwidth.fillna(df["gpu_memory_gb"] * bandwidth_per_gb)
    df["total_gpu_memory_gb"] = df["gpu_memory_gb"] * df["gpu_count"]
    return df


def _without_host_ram(
    info_gb: pd.Series, df: pd.DataFrame, table_gb: pd.Series, name: str, report: CatalogReport
) -> pd.Series:
    """GpuInfo memory that adds up to the host's memory (MemoryGiB) is the host's RAM, not the GPUs'.

    Nebius's catalog does this (an H100 "with 200 GB", an L40S with 32 or 288 GB: each row's RAM).
    For parts the table knows, their published memory is used instead; the report says so.
    """
    host = df["host_memory_gb"]
    adds_up = (info_gb * df["gpu_count"] - host).abs() <= 0.01 * host
    # Cudo's 48 GB cards in 48 GB hosts add up too, and agree with the part: those are kept.
    is_ram = table_gb.notna() & adds_up & ((info_gb - table_gb).abs() / table_gb >= GPUINFO_FIT)
    if is_ram.any():
        report.notes.append(
            f"{name}: GpuInfo memory of {int(is_ram.sum())} rows adds up to the host's RAM (MemoryGiB), "
            "not GPU memory; used the published memory of those parts instead"
        )
    return info_gb.mask(is_ram)


def _gpuinfo_is_per_server(
    info_gb: pd.Series, count: pd.Series, table_gb: pd.Series, name: str, report: CatalogReport
) -> bool:
    """Does this catalog's GpuInfo memory count the whole server rather than one GPU?

    SkyPilot's clouds disagree (Lambda and most give one GPU's memory; vast and primeintellect the
    server's total), so the reading is decided once per catalog: per server only if more multi-GPU
    rows of known parts fit that reading (within GPUINFO_FIT of the table) than fit the per-GPU one.
    A catalog whose GpuInfo fits neither (Nebius's is the host's RAM) keeps the per-GPU reading.
    """
    usable = (count > 1) & info_gb.notna() & table_gb.notna()
    fits_gpu = ((info_gb - table_gb).abs() / table_gb < GPUINFO_FIT)[usable]
    fits_server = ((info_gb / count - table_gb).abs() / table_gb < GPUINFO_FIT)[usable]
    votes_server, votes_gpu = int((fits_server & ~fits_gpu).sum()), int((fits_gpu & ~fits_server).sum())
    if votes_server <= votes_gpu:
        return False
    report.notes.append(
        f"{name}: GpuInfo memory is per server, not per GPU ({votes_server} of {int(usable.sum())} "
        "multi-GPU rows of known parts fit only that reading); divided by the GPU count"
    )
    return True


def _with_location(df: pd.DataFrame) -> pd.DataFrame:
    """Coordinates and their layer for each row, resolved once per distinct (zone, region, cloud)."""
    keys = list(zip(df["zone"], df["region"], df["cloud"], strict=True))
    resolved = {key: resolve_row(*key) for key in set(keys)}
    locations = [resolved[key] for key in keys]
    return df.assign(
        lat=[loc.lat for loc in locations],
        lon=[loc.lon for loc in locations],
        location_source=[loc.source for loc in locations],
        location=[loc.place for loc in locations],
    )


def _count_layers(df: pd.DataFrame, report: CatalogReport) -> None:
    report.rows_kept += len(df)
    report.location_layers.update(df["location_source"])
    report.hardware_layers.update(df["hardware_source"])
    latency_assumed = (df["location_source"] == "assumed") & df["measured_latency_ms"].isna()
    report.assumed_regions.update(df.loc[latency_assumed, "region"])


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
    report.location_layers.subtract(servers.loc[dupes, "location_source"])
    report.hardware_layers.subtract(servers.loc[dupes, "hardware_source"])
    return servers[~dupes].reset_index(drop=True), report
