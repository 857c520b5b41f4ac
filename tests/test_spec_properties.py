"""Property: any value in any spec field gives a valid spec or a SpecError that names the field.

Every leaf field of DistillSpec (found by walking the model, list sections through their first
entry) is set, one at a time, to a random finite, non-finite, negative, huge or wrongly typed
value. parse_spec must either accept the spec or raise SpecError whose message names the field
by its dotted path, one line per problem; a rule across fields (provision's, the budget's) may
name the section the field is in instead. Any other exception is a bug: it would reach the user
as a traceback.
"""

from __future__ import annotations

import copy
import math
from typing import Any, get_args, get_origin

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from stratos.spec import DistillSpec, SpecError, parse_spec

BASE: dict[str, Any] = {
    "task": {"domain": "arithmetic"},
    "teachers": [{"name": "t", "kind": "stored", "model": "teacher.jsonl"}],
    "students": [{"name": "s", "model": "zoo:nano"}],
    "relax": {"steps": [{"action": "higher_budget"}]},
}


def _models_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the BaseModel an annotation holds, whether inside a list) or (None, False) for a leaf."""
    args = get_args(annotation) or (annotation,)
    in_list = get_origin(annotation) is list
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, in_list
    return None, False


def leaf_paths(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    paths: list[tuple] = []
    for name, field in model.model_fields.items():
        inner, in_list = _models_in(field.annotation)
        if inner is None:
            paths.append((*prefix, name))
        else:
            paths += leaf_paths(inner, (*prefix, name, 0) if in_list else (*prefix, name))
    return paths


PATHS = leaf_paths(DistillSpec)

VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # finite, from tiny to 1.8e308
    st.sampled_from([math.inf, -math.inf, math.nan]),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 10**20, 1e308, -1e308, 1e-320]),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.floats()), max_size=2),
)


def with_value(path: tuple, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    node: Any = spec
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return spec


def test_the_walk_finds_every_section():
    dotted = {".".join(map(str, p)) for p in PATHS}
    for expected in (
        "task.train_size",
        "servers.job_estimate.mfu",
        "teachers.0.price_per_1k_input",
        "relax.steps.0.factor",
    ):
        assert expected in dotted
    assert len(PATHS) > 90


@settings(max_examples=600, deadline=None)
@given(path=st.sampled_from(PATHS), value=VALUES)
# Found by CI: a validator quoted the raw value, and its carriage return split the one line in two.
@example(path=("provision", "prefect_api_url"), value="\r")
@example(path=("task", "domain"), value="a\nb")
def test_any_value_in_any_field_is_valid_or_a_spec_error_naming_it(path, value):
    try:
        parse_spec(with_value(path, value))
    except SpecError as err:
        dotted = ".".join(map(str, path))
        section = ".".join(map(str, path[:-1]))
        head, *more = str(err).splitlines()
        # One problem is one line; several (a dict with two bad entries) are a count, then one line each.
        for line in more or [head]:
            assert dotted in line or (section and section in line), f"{dotted} = {value!r}: {err}"
        assert not more or head.startswith(f"invalid spec ({len(more)} problems):"), str(err)


@settings(max_examples=200, deadline=None)
@given(
    path=st.sampled_from([p for p in PATHS if p[-1] not in ("seed",)]),
    value=st.sampled_from([math.inf, math.nan]),
)
def test_no_field_accepts_a_non_finite_number(path, value):
    try:
        spec = parse_spec(with_value(path, value))
    except SpecError:
        return
    # Accepted: only where the field is not a number at all (a name, a dict of options, ...).
    node: Any = spec
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    assert not (isinstance(node, float) and not math.isfinite(node)), (
        f"{'.'.join(map(str, path))} kept {node}"
    )
