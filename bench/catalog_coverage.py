"""How many GPU rows of each catalog are usable, and by which layer each was resolved.

    .venv/bin/python bench/catalog_coverage.py [CATALOG.csv | DIR ...]

Defaults to the SkyPilot excerpts in tests/data/catalogs (clouds Stratos does not ship). Point it
at full SkyPilot catalogs (a folder of <cloud>.csv, or SkyPilot's own <cloud>/vms.csv layout) for
the figures the README quotes. Per cloud: GPU rows, usable servers, rows merged as duplicates,
unusable rows, and the location (exact/parsed/centroid/assumed) and hardware (exact/alias/family/
gpuinfo) layer of every usable server. Target: >= 95% of GPU rows usable in every cloud.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratos.accelerators import LAYERS as HARDWARE_LAYERS  # noqa: E402
from stratos.catalog import CatalogReport, load_catalog  # noqa: E402
from stratos.locations import LAYERS as LOCATION_LAYERS  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "catalogs"
TARGET_USABLE = 0.95


def catalog_files(args: list[str]) -> list[Path]:
    paths: list[Path] = []
    for arg in args or [str(DEFAULT)]:
        path = Path(arg)
        paths += sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    return paths


def coverage(path: Path) -> dict:
    """One catalog's counts; usable share = (usable servers + merged duplicates) / GPU rows."""
    report = CatalogReport()
    load_catalog(path, report)
    merged = sum(c for r, c in report.skipped.items() if r.startswith("duplicate"))
    unusable = sum(report.unusable().values())
    return {
        "gpu_rows": report.gpu_rows,
        "usable": report.rows_kept,
        "duplicates_merged": merged,
        "unusable": unusable,
        "usable_share": round(1 - unusable / report.gpu_rows, 4) if report.gpu_rows else None,
        "location": {layer: report.location_layers[layer] for layer in LOCATION_LAYERS},
        "hardware": {layer: report.hardware_layers[layer] for layer in HARDWARE_LAYERS},
        "unusable_reasons": dict(report.unusable()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("catalogs", nargs="*", help="catalog files or folders (default: the test excerpts)")
    args = parser.parse_args()
    clouds = {}
    for path in catalog_files(args.catalogs):
        name = path.parent.name if path.stem == "vms" else path.stem
        clouds[name] = coverage(path)
    header = f"{'cloud':<16}{'GPU rows':>9}{'usable':>7}{'dupes':>6}{'bad':>5}  "
    header += " ".join(f"{layer:>8}" for layer in LOCATION_LAYERS) + "  |"
    header += " ".join(f"{layer:>8}" for layer in HARDWARE_LAYERS)
    print(header)
    for name, c in clouds.items():
        line = f"{name:<16}{c['gpu_rows']:>9}{c['usable']:>7}{c['duplicates_merged']:>6}{c['unusable']:>5}  "
        line += " ".join(f"{c['location'][layer]:>8}" for layer in LOCATION_LAYERS) + "  |"
        line += " ".join(f"{c['hardware'][layer]:>8}" for layer in HARDWARE_LAYERS)
        print(line)
    shares = [c["usable_share"] for c in clouds.values() if c["usable_share"] is not None]
    summary = {
        "clouds": clouds,
        "min_usable_share": min(shares) if shares else None,
        "target_usable_share": TARGET_USABLE,
        "meets_target": bool(shares) and min(shares) >= TARGET_USABLE,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
