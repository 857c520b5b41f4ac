"""Catalog loading: real shipped catalogs, name normalisation, memory, latency model, bad rows."""

from __future__ import annotations

import pytest

from stratos.spec import ServerSettings
from tasks.catalog import load_catalog, load_catalogs, lookup_gpu, region_coordinates, round_trip_ms

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
    path.write_text(HEADER + "\n".join([
        "ok1,H100,1,8,64,2.5,us-east-1,,",
        "noprice,H100,1,8,64,,us-east-1,,",
        "text,H100,1,8,64,cheap,us-east-1,,",
        "neg,H100,1,8,64,-1,us-east-1,,",
        "weird,QPU-9,1,8,64,3,us-east-1,,",
        "nowhere,A10,1,8,64,1,mars-1,,",
        "cpu,,,8,64,0.3,us-east-1,,",
    ]) + "\n")  # fmt: skip
    servers, report = load_catalogs([path])
    assert servers["id"].tolist() == ["mycloud/ok1/us-east-1"]
    assert report.rows_read == 7 and report.rows_kept == 1
    assert dict(report.skipped) == {
        "missing price": 1, "non-numeric price": 1, "negative price": 1,
        "unknown accelerator 'QPU-9' (add it to gpu_specs.csv)": 1,
        "unknown region 'mars-1' (add it to regions.csv)": 1, "CPU-only instance (no GPU)": 1,
    }  # fmt: skip
    assert "mycloud/text/us-east-1" in report.summary()


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
    same = round_trip_ms(*[__import__("numpy").array([v]) for v in ny], "us-newyork-1")[0]
    london = round_trip_ms(
        __import__("numpy").array([51.51]), __import__("numpy").array([-0.13]), "us-newyork-1"
    )[0]
    assert 1.5 < same < 3
    assert 60 < london < 100  # measured transatlantic RTTs are ~70-80 ms
    assert region_coordinates("40.7, -74.0") == (40.7, -74.0)
    with pytest.raises(ValueError, match="unknown region 'atlantis'.*us-east"):
        region_coordinates("atlantis")
