"""fastjsonschema errors as Segment violations (segment-api.md §7.4).

Segment reports one violation per error of Go's gojsonschema, with ``type`` the error kind
title-cased (``Invalid Type``, ``Required``, ``Enum``...), ``field`` the dotted path without the
root (``properties.products.0.price``; ``(root)`` for the message itself) and gojsonschema's
English description. This module maps fastjsonschema's errors to the same triple.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastjsonschema import JsonSchemaValueException

ROOT = "(root)"

#: fastjsonschema rule -> (violation type, description template); ``{n}`` is the rule value.
_KINDS: dict[str, tuple[str, str]] = {
    "pattern": ("Pattern", "Does not match pattern '{n}'"),
    "format": ("Format", "Does not match format '{n}'"),
    "minLength": ("String Gte", "String length must be greater than or equal to {n}"),
    "maxLength": ("String Lte", "String length must be less than or equal to {n}"),
    "minimum": ("Number Gte", "Must be greater than or equal to {n}"),
    "maximum": ("Number Lte", "Must be less than or equal to {n}"),
    "exclusiveMinimum": ("Number Gt", "Must be greater than {n}"),
    "exclusiveMaximum": ("Number Lt", "Must be less than {n}"),
    "multipleOf": ("Multiple Of", "Must be a multiple of {n}"),
    "minItems": ("Array Min Items", "Array must have at least {n} items"),
    "maxItems": ("Array Max Items", "Array must have at most {n} items"),
    "uniqueItems": ("Unique", "Array items must be unique"),
    "minProperties": ("Array Min Properties", "Must have at least {n} properties"),
    "maxProperties": ("Array Max Properties", "Must have at most {n} properties"),
    "anyOf": ("Number Any Of", "Must validate at least one schema (anyOf)"),
    "oneOf": ("Number One Of", "Must validate one and only one schema (oneOf)"),
    "allOf": ("Number All Of", "Must validate all the schemas (allOf)"),
    "not": ("Number Not", "Must not validate the schema (not)"),
    "contains": ("Contains", "At least one of the items must match"),
    "additionalItems": ("Array No Additional Items", "No additional items allowed on array"),
    "propertyNames": ("Invalid Property Name", "Property name does not match the schema"),
}


def field_name(path: list[str]) -> str:
    """``['data', 'properties', 'x']`` -> ``properties.x``; the message itself is ``(root)``."""
    return ".".join(str(p) for p in path[1:]) or ROOT


def json_type(value: Any) -> str:
    """gojsonschema's name of the type of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _declared(definition: Any, name: str) -> bool:
    if not isinstance(definition, dict):
        return False
    if name in (definition.get("properties") or {}):
        return True
    return any(re.search(p, name) for p in definition.get("patternProperties") or ())


def violations_of(error: JsonSchemaValueException) -> list[tuple[dict[str, str], list[str] | None]]:
    """The violations one error stands for, each with the path (after ``data``) of the value
    that offends, or None when no value can be removed to cure it (a missing required key, an
    error about the message as a whole)."""
    path = [str(p) for p in (error.path or ["data"])]
    at = path[1:]
    field = field_name(path)
    rule = error.rule or ""
    value = error.value
    definition = error.rule_definition
    if rule == "required":
        names = definition if isinstance(definition, list) else []
        present = value if isinstance(value, dict) else {}
        missing = [n for n in names if n not in present] or names
        return [({"type": "Required", "field": field, "description": f"{n} is required"}, None) for n in missing]
    if rule == "additionalProperties" and isinstance(value, dict):
        parent = error.definition if isinstance(error.definition, dict) else {}
        extra = [k for k in value if not _declared(parent, k)]
        return [
            (
                {
                    "type": "Additional Property Not Allowed",
                    "field": ".".join([*at, k]),
                    "description": f"Additional property {k} is not allowed",
                },
                [*at, k],
            )
            for k in extra
        ]
    if rule == "type":
        expected = ", ".join(definition) if isinstance(definition, list) else str(definition)
        violation = {
            "type": "Invalid Type",
            "field": field,
            "description": f"Invalid type. Expected: {expected}, given: {json_type(value)}",
        }
    elif rule == "enum":
        allowed = ", ".join(json.dumps(v) for v in definition) if isinstance(definition, list) else str(definition)
        violation = {"type": "Enum", "field": field, "description": f"{field} must be one of the following: {allowed}"}
    elif rule == "const":
        description = f"{field} does not match: {json.dumps(definition)}"
        violation = {"type": "Const", "field": field, "description": description}
    elif rule in _KINDS:
        kind, template = _KINDS[rule]
        violation = {"type": kind, "field": field, "description": template.format(n=definition)}
    else:
        message = str(error.message).replace("data.", "", 1).replace("data ", f"{ROOT} ", 1)
        violation = {"type": rule.replace("_", " ").title() or "Invalid", "field": field, "description": message}
    return [(violation, at or None)]
