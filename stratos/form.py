"""How a Stratos model reads as a Prefect UI form: labels, the choices of optional fields, defaults.

Prefect's UIs render a flow parameter's JSON schema as a form: a field's
label is its `title` (else the referenced model's title, else "Field"), an
optional field's choices are labelled by their titles (else Python-ish type
names), and a field shows its schema `default`. pydantic leaves several of
these out; `form_schema` puts them back, for every model that names it as
its `json_schema_extra`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# How field names read as form labels (the Prefect UI shows a field's title): acronyms in capitals,
# a trailing unit in parentheses. "max_latency_ms" -> "Max latency (ms)", "lora_r" -> "LoRA r".
_WORDS = {
    "usd": "USD",
    "gpu": "GPU",
    "gb": "GB",
    "api": "API",
    "url": "URL",
    "lora": "LoRA",
    "uri": "URI",
    "bf16": "bf16",
    "tau": "τ (tau)",
    "k": "K",
}
_UNITS = {"ms": "ms", "s": "s", "usd": "USD", "gb": "GB"}
# Choices of an optional field, as the form shows them (it showed Python names: "str", "None").
_VARIANT_TITLES = {
    "string": "text",
    "number": "number",
    "integer": "number",
    "boolean": "yes/no",
    "null": "none",
}


def field_title(name: str, _info: Any = None) -> str:
    """The form label of a spec field: its name in words, acronyms kept, a trailing unit in parentheses."""
    words = name.split("_")
    unit = _UNITS.get(words[-1]) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    text = " ".join(_WORDS.get(w, w) for w in words)
    if words[0] not in _WORDS:
        text = text[0].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def form_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Add what pydantic leaves out of a model's JSON schema that the UI form needs (a model's
    `json_schema_extra`): a title on every field (pydantic gives none to a section field, so the form
    showed class names or "Field") and on the choices of an optional one; `default_factory` defaults,
    so the form shows what applies (catalogs ['builtin'], not an empty list). Section defaults are
    left out: their own fields carry them."""
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        if name not in properties:
            continue
        properties[name].setdefault("title", field_title(name))
        for variant in properties[name].get("anyOf", []):  # the UI labels `X | None` choices by title
            if variant.get("type") in _VARIANT_TITLES:
                variant.setdefault("title", _VARIANT_TITLES[variant["type"]])
        if info.default_factory is not None:
            value = info.default_factory()  # type: ignore[call-arg]
            if not isinstance(value, BaseModel):
                properties[name]["default"] = value
