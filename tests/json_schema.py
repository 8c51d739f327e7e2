"""Checks JSON against the schema files in schemas/json/: the subset of JSON Schema they use.

The files are standard JSON Schema (draft 2020-12), for any validator. This
checker knows the keywords they use (``type``, ``enum``, ``const``,
``required``, ``properties``, ``additionalProperties``, ``propertyNames``,
``items``, ``minItems``, ``maxItems``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``, ``pattern`` and local ``$ref``) and refuses a schema with any
other, so a keyword it would silently skip cannot creep in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "json"
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_KNOWN = _ANNOTATIONS | {"type", "enum", "const", "required", "properties", "additionalProperties",
                         "propertyNames", "items", "minItems", "maxItems", "minimum", "maximum",
                         "minLength", "maxLength", "pattern", "$ref"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def load(name: str) -> dict[str, Any]:
    """schemas/json/``name``.schema.json."""
    return dict(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def problems(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
             where: str = "$") -> list[str]:
    """Everything in ``value`` that ``schema`` refuses (empty: it conforms)."""
    root = schema if root is None else root
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema at {where} uses keywords this checker does not know: {unknown}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return problems(value, root["$defs"][ref.removeprefix("#/$defs/")], root, where)
    out: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: {value!r} is not {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: {value!r} is not {schema['const']!r}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            out.append(f"{where}: {len(value)} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += problems(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        out += [f"{where}: lacks {key!r}" for key in schema.get("required", ()) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema:
                out += problems(key, schema["propertyNames"], root, f"{where} key {key!r}")
            if key in properties:
                out += problems(item, properties[key], root, f"{where}.{key}")
            elif extra is False:
                out.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                out += problems(item, extra, root, f"{where}.{key}")
    return out


def assert_conforms(payload: bytes | str | Any, name: str) -> None:
    """``payload`` (JSON text, or already parsed) conforms to schemas/json/``name``.schema.json."""
    value = json.loads(payload) if isinstance(payload, bytes | str) else payload
    found = problems(value, load(name))
    assert not found, f"{name}: {found}"
