"""Accelerator names in the spellings real catalogs use, resolved in layers against gpu_specs.csv."""

from __future__ import annotations

import pytest

from stratos.accelerators import floors, gpu_specs, resolve_gpu


@pytest.mark.parametrize(
    "name,layer,part",
    [
        ("A100-80G", "exact", "A100-80GB"),
        ("RTX 3080 Ti", "exact", "RTX3080Ti"),
        ("NVIDIA GeForce RTX 4090", "alias", "RTX4090"),  # vendor words dropped
        ("Tesla V100-SXM2-16GB", "alias", "V100"),
        ("RTX PRO 6000 96GB", "alias", "RTXPRO6000-Blackwell"),  # a trailing memory size dropped
        ("RTX5080 Super", "family", "RTX5080"),  # a variant of a listed part
        ("QPU-9", "gpuinfo", None),
    ],
)
def test_accelerator_layers(name, layer, part):
    spec, found = resolve_gpu(name)
    assert found == layer and (spec.name if spec else None) == part


def test_names_with_a_memory_size_take_that_memory():
    spec, layer = resolve_gpu("RTX 4090 48GB")  # the 48 GB boards some hosts on vast list
    assert (spec.name, spec.memory_gb, spec.tflops, layer) == ("RTX4090", 48.0, 165.2, "alias")


def test_the_floor_is_below_every_listed_part():
    tflops_per_gb, bandwidth_per_gb = floors()
    for spec in gpu_specs().values():
        assert spec.tflops >= tflops_per_gb * spec.memory_gb
        assert spec.bandwidth_gbs >= bandwidth_per_gb * spec.memory_gb
