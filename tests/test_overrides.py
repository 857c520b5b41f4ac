"""stratos/overrides.py: a saved spec with a few fields changed, validated as a whole."""

from __future__ import annotations

import pytest

from stratos.overrides import SpecOverrides
from stratos.spec import SpecError, parse_spec

SAVED = {
    "name": "nightly",
    "task": {"domain": "arithmetic", "train_size": 100},
    "constraints": {"budget_usd": 50, "max_hourly_usd": 5},
    "teachers": [{"name": "t", "model": "zoo:teacher-strong"}],
    "students": [{"name": "s", "model": "zoo:nano"}],
}


def test_set_overrides_land_in_their_sections_and_the_rest_is_kept() -> None:
    spec = SpecOverrides(budget_usd=80, train_size=400, serve=False).apply(parse_spec(SAVED))
    assert (spec.constraints.budget_usd, spec.task.train_size, spec.serve.enabled) == (80, 400, False)
    assert (
        spec.name == "nightly" and spec.constraints.max_hourly_usd == 5 and spec.task.domain == "arithmetic"
    )
    assert SpecOverrides().apply(parse_spec(SAVED)) == parse_spec(SAVED)


def test_the_result_is_validated_as_a_whole() -> None:
    with pytest.raises(SpecError, match="max_hourly_usd.*above constraints.budget_usd"):
        SpecOverrides(budget_usd=2).apply(parse_spec(SAVED))  # below the saved hourly cap


def test_the_short_form_has_labels_and_no_python_type_names() -> None:
    props = SpecOverrides.model_json_schema()["properties"]
    assert props["budget_usd"]["title"] == "Budget (USD)"
    assert [v["title"] for v in props["budget_usd"]["anyOf"]] == ["number", "none"]
