"""Catalog loading: real shipped catalogs, name normalisation, memory, latency model, bad rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratos.accelerators import floors
from stratos.catalog import (
    ANTIPODAL_RTT_MS,
    CatalogReport,
    assumed_latency_ms,
    load_catalog,
    load_catalogs,
    lookup_gpu,
    region_coordinates,
    round_trip_ms,
)
from stratos.spec import ServerSettings

DATA = Path(__file__).parent / "data" / "catalogs"
HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\n"


@pytest.fixture(scope="module")
def builtin():
    return load_catalogs(ServerSettings().catalog_paths())


def test_builtin_catalogs_load_with_a_report(builtin):
    servers, report = builtin
    assert report.rows_read == 3329  # 323 + 2750 + 195 + 61 rows in the shipped CSVs
    assert len(servers) == report.rows_kept > 2000
    assert servers["id"].is_unique
    assert set(servers["cloud"]) == {"lambda", "runpod", "cudo", "nebius"}
    assert report.skipped["CPU-only instance (no GPU)"] > 0
    assert report.skipped["duplicate server id (kept the cheapest)"] == 14  # RunPod lists 14 twice
    assert (servers["price"] >= 0).all() and servers[
        ["tflops", "total_gpu_memory_gb", "lat"]
    ].notna().all().all()
    # Every shipped row is in the tables: the layers change nothing there.
    assert set(servers["location_source"]) == {"exact"} and set(servers["hardware_source"]) == {"exact"}
    assert report.warnings() == []


def test_gpu_names_normalise_across_clouds():
    assert lookup_gpu("A100-80G") == lookup_gpu("A100-80GB")
    assert lookup_gpu("RTX6000Ada") == lookup_gpu("RTX6000-Ada")
    assert lookup_gpu("rtx a6000") == lookup_gpu("A6000")
    assert lookup_gpu("nonesuch-9000") is None


def test_gpu_memory_from_gpuinfo_wins_and_is_per_gpu(builtin):
    servers, _ = builtin
    s = servers.set_index("id")
    # Lambda's GpuInfo total says 16 GiB for 8x V100: it is per GPU, so the server has 128.
    assert s.loc["lambda/gpu_8x_v100/us-east-1", "total_gpu_memory_gb"] == 128
    # Cudo's H100 NVL PCIe carries 94 GiB in GpuInfo, above the table's 80 for H100.
    assert s.loc["cudo/epyc-genoa-h100-nvl-pcie_1x2v4gb/au-melbourne-1", "gpu_memory_gb"] == 94
    # RunPod has no memory in GpuInfo: it comes from the accelerator table.
    assert s.loc["runpod/1x_A100-80GB_SECURE/CA/CA-MTL-1", "gpu_memory_gb"] == 80


def test_bad_rows_are_counted_by_reason_not_dropped_silently(tmp_path):
    path = tmp_path / "mycloud.csv"
    path.write_text(
        HEADER
        + "\n".join(
            [
                "ok1,H100,1,8,64,2.5,us-east-1,,",
                "noprice,H100,1,8,64,,us-east-1,,",
                "text,H100,1,8,64,cheap,us-east-1,,",
                "neg,H100,1,8,64,-1,us-east-1,,",
                "weird,QPU-9,1,8,64,3,us-east-1,,",
                "nowhere,A10,1,8,64,1,mars-1,,",
                "cpu,,,8,64,0.3,us-east-1,,",
            ]
        )
        + "\n"
    )
    servers, report = load_catalogs([path])
    # A server nobody can place is kept, its location marked assumed (its latency is the worst case).
    assert servers["id"].tolist() == ["mycloud/nowhere/mars-1", "mycloud/ok1/us-east-1"]
    assert servers["location_source"].tolist() == ["assumed", "exact"]
    assert report.rows_read == 7 and report.rows_kept == 2
    assert dict(report.skipped) == {
        "missing price": 1,
        "non-numeric price": 1,
        "negative price": 1,
        "unknown accelerator 'QPU-9' (add it to gpu_specs.csv)": 1,
        "CPU-only instance (no GPU)": 1,
    }
    assert "mycloud/text/us-east-1" in report.summary()
    assert "1 servers rest on an assumed location ('mars-1' x1)" in report.summary()
    # 4 of the 6 GPU rows are unusable: loud, with the fix; the CPU-only row is not counted against it.
    warning = "\n".join(report.warnings())
    assert "4 of 6 GPU rows (66.7%) are unusable" in warning and "give every row a Price" in warning


def test_yaml_catalog_with_measured_latency(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text(
        "servers:\n"
        "  - {Cloud: edge, InstanceType: a, AcceleratorName: L4, AcceleratorCount: 2, Price: 1.1, Region: mars-1, LatencyMs: 7}\n"
    )
    servers = load_catalog(path)
    row = servers.iloc[0]
    assert (
        row["id"] == "edge/a/mars-1" and row["total_gpu_memory_gb"] == 48 and row["measured_latency_ms"] == 7
    )


def test_missing_columns_name_what_is_needed(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Name,Cost\nx,1\n")
    with pytest.raises(ValueError, match="lacks column.*AcceleratorName"):
        load_catalog(path)


def test_latency_model_is_plausible():
    ny = region_coordinates("us-newyork-1")
    same = round_trip_ms(*[np.array([v]) for v in ny], "us-newyork-1")[0]
    london = round_trip_ms(np.array([51.51]), np.array([-0.13]), "us-newyork-1")[0]
    assert 1.5 < same < 3
    assert 60 < london < 100  # measured transatlantic RTTs are ~70-80 ms
    assert region_coordinates("40.7, -74.0") == (40.7, -74.0)
    with pytest.raises(ValueError, match="unknown region 'atlantis'.*us-east"):
        region_coordinates("atlantis")


def test_user_regions_accept_places_but_not_bare_countries():
    assert region_coordinates("Lisbon") == pytest.approx((38.72, -9.14))
    assert region_coordinates("40.7, -74.0") == (40.7, -74.0)
    with pytest.raises(ValueError, match="unknown region 'Portugal'.*us-east.*Frankfurt, DE"):
        region_coordinates("Portugal")


def test_a_part_only_gpuinfo_knows_is_kept_with_a_throughput_floor(tmp_path):
    path = tmp_path / "newcloud.csv"
    gpuinfo = "\"{'Gpus': [{'Name': 'QPU-9', 'Count': 2, 'MemoryInfo': {'SizeInMiB': 65536}}]}\""
    path.write_text(HEADER + f"q2,QPU-9,2,8,64,3,us-east-1,{gpuinfo},\nq1,QPU-9,1,8,64,2,us-east-1,,\n")
    servers, report = load_catalogs([path])
    assert report.skipped["unknown accelerator 'QPU-9' (add it to gpu_specs.csv)"] == 1  # q1: no memory
    row = servers.iloc[0]
    tflops_per_gb, bandwidth_per_gb = floors()
    assert row["hardware_source"] == "gpuinfo" and row["gpu_memory_gb"] == 64
    assert row["tflops"] == pytest.approx(2 * 64 * tflops_per_gb)  # below any listed part with 64 GB
    assert row["bandwidth_gbs"] == pytest.approx(64 * bandwidth_per_gb)
    assert "1 servers have an accelerator only GpuInfo describes" in report.summary()


def test_gpuinfo_memory_per_server_is_read_as_such_once_per_catalog():
    # vast writes the server's total; 2x RTX 4090 at 49128 MiB are two 24 GB cards, 98280 two 48 GB ones.
    servers, report = load_catalogs([DATA / "vast.csv"])
    s = servers.set_index("id")
    assert s.loc["vast/2x-RTX_4090-32-65536/St.-Petersburg, RU, EU", "gpu_memory_gb"] == pytest.approx(
        24, abs=0.1
    )
    assert s.loc["vast/2x-RTX_4090-32-65536/Hong Kong, HK, AS", "gpu_memory_gb"] == pytest.approx(48, abs=0.1)
    assert any(n.startswith("vast.csv: GpuInfo memory is per server") for n in report.notes)


# Location layers of the excerpts' GPU rows (tests/data/catalogs, real SkyPilot rows of 11 other clouds).
EXCERPT_LAYERS = {
    "do": {"parsed": 1},
    "fluidstack": {"exact": 2, "parsed": 3, "centroid": 1},
    "hyperbolic": {"assumed": 2},
    "mithril": {"parsed": 3},
    "ovhcloud": {"parsed": 7},
    "paperspace": {"parsed": 5},
    "primeintellect": {"parsed": 30, "centroid": 6, "assumed": 5},
    "seeweb": {"centroid": 4, "assumed": 2},
    "shadeform": {"exact": 1, "parsed": 56},
    "simplepod": {"centroid": 8},
    "vast": {"parsed": 15, "centroid": 21},
}


@pytest.mark.parametrize("cloud", sorted(EXCERPT_LAYERS))
def test_other_clouds_catalogs_are_usable_with_each_layer_recorded(cloud):
    servers, report = load_catalogs([DATA / f"{cloud}.csv"])
    assert sum(report.unusable().values()) <= 0.05 * report.gpu_rows
    assert dict(report.location_layers) == EXCERPT_LAYERS[cloud]
    assert servers["hardware_source"].isin(["exact", "alias", "family", "gpuinfo"]).all()
    assert servers[["tflops", "total_gpu_memory_gb", "bandwidth_gbs"]].gt(0).all().all()
    known = servers["location_source"] != "assumed"
    assert servers.loc[known, ["lat", "lon"]].notna().all().all()
    assert servers.loc[~known, ["lat", "lon"]].isna().all().all()


def test_assumed_latency_is_worse_than_any_known_server():
    assert pytest.approx(282.2, abs=0.1) == ANTIPODAL_RTT_MS
    assert assumed_latency_ms(np.array([3.0, 90.0])) == ANTIPODAL_RTT_MS
    assert assumed_latency_ms(np.array([3.0, 400.0])) == 401.0  # a measured LatencyMs slower still
    assert assumed_latency_ms(np.array([])) == ANTIPODAL_RTT_MS


def test_placeholder_spot_prices_are_not_prices(tmp_path):
    path = tmp_path / "spot.csv"
    path.write_text(HEADER + "a,H100,1,8,64,2,us-east-1,,0.00\nb,H100,1,8,64,2,us-east-2,,99999999\n")
    servers = load_catalog(path)
    assert servers["spot_price"].isna().all()


cell = st.sampled_from
catalog_rows = st.lists(
    st.tuples(
        cell(["a", "b", "c"]),  # instance type: duplicates happen
        cell(["H100", "RTX 3080 Ti", "QPU-9", "", " "]),
        cell(["1", "2", "0", "", "x"]),
        cell(["1.5", "0", "", "cheap", "-2"]),
        cell(["us-east-1", "Ohio, US, NA", "SE - STO-03", "UNSPECIFIED", "", "mars-1"]),
        cell(["", "{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]}"]),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(catalog_rows)
def test_a_row_never_disappears_without_a_counted_reason(tmp_path, rows):
    path = tmp_path / "random.csv"
    with path.open("w", newline="") as f:
        f.write(HEADER)
        csv.writer(f).writerows((it, acc, n, 8, 64, p, r, info, "") for it, acc, n, p, r, info in rows)
    servers, report = load_catalogs([path])
    assert report.rows_read == len(rows)
    assert report.rows_kept == len(servers) == report.rows_read - sum(report.skipped.values())
    assert sum(report.location_layers.values()) == sum(report.hardware_layers.values()) == len(servers)
    assert servers["id"].is_unique


def test_gpuinfo_that_is_the_hosts_ram_gives_way_to_the_published_memory(tmp_path):
    """Nebius lists each row's RAM as GpuInfo memory (an H100 'with 200 GB'); a card that agrees is kept."""
    gpuinfo = "\"{'Gpus': [{'Name': '%s', 'Count': %d, 'MemoryInfo': {'SizeInMiB': %d}}]}\""
    rows = [
        "h100,H100,1,16,200,2.95,eu-north1," + gpuinfo % ("H100", 1, 200 * 1024),
        "l40s,L40S,1,8,32,1.55,eu-north1," + gpuinfo % ("L40S", 1, 32 * 1024),
        "l40s-48,L40S,1,24,48,1.6,eu-north1," + gpuinfo % ("L40S", 1, 48 * 1024),  # 48 GB card, 48 GB host
    ]
    path = tmp_path / "nebius.csv"
    path.write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo\n"
        + "\n".join(rows)
    )
    report = CatalogReport()
    table = load_catalog(path, report).set_index("instance_type")
    assert table.loc["h100", "gpu_memory_gb"] == 80 and table.loc["l40s", "gpu_memory_gb"] == 48
    assert table.loc["l40s-48", "gpu_memory_gb"] == 48
    assert any("adds up to the host's RAM" in note and "2 rows" in note for note in report.notes)
