"""Training precision: bf16 where the hardware has it, float32 elsewhere, an explicit choice kept."""

from __future__ import annotations

import logging

import pytest
import torch

from stratos import devices

MAHJONG = {"hand_size": 10, "suits": 1, "honors": False}


@pytest.mark.parametrize("native", [True, False])
def test_empty_setting_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: native)
    assert devices.resolve_bf16(None) is native


def test_forced_bf16_without_bf16_units_is_kept_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="stratos.devices"):
        assert devices.resolve_bf16(True) is True
    (record,) = caplog.records
    assert "training.bf16 is true" in record.message and "emulated" in record.message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stratos.devices"):
        assert devices.resolve_bf16(False) is False
    assert caplog.records == []


def test_a_cpu_without_avx512_has_no_native_bf16():
    # The real probe on this machine: an AVX2-only (or plainer) CPU cannot run bf16 natively.
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT"):
        assert devices.cpu_has_bf16() is False
    else:
        assert isinstance(devices.cpu_has_bf16(), bool)


@pytest.mark.parametrize("native", [True, False])
def test_weak_teacher_is_addressed_by_the_precision_it_trains_in(monkeypatch, native):
    from stratos import zoo
    from stratos.domains import get_domain
    from stratos.spec import TaskSpec
    from stratos.teachers import RECIPES

    assert RECIPES["weak"]["bf16"] == "auto"
    monkeypatch.setattr(devices, "native_bf16", lambda: native)
    real = zoo.cached_build

    def address(name, key, build):  # the teacher's address instead of its build (minutes)
        return key if name.startswith("teacher-") else real(name, key, build)

    monkeypatch.setattr(zoo, "cached_build", address)
    key = zoo.train_teacher(get_domain(TaskSpec(domain="mahjong", options=MAHJONG)), "weak")
    assert key["bf16"] is native
