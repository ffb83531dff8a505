"""Getting JSON out of a model's reply and checking it against a JSON Schema.

Small models wrap JSON in code fences or lead with a sentence; :func:`extract_json` takes the
first JSON value it can find. :func:`schema_errors` validates with ``jsonschema`` when it is
installed and otherwise with a small validator that covers the keywords structured output
uses (type, properties, required, additionalProperties, items, enum, const, anyOf/oneOf/allOf,
$ref to local definitions, and the numeric/length bounds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ModelResponseError

__all__ = [
    "OUTPUT_TOOL",
    "extract_json",
    "output_tool_schema",
    "output_tool_text",
    "parse_json",
    "schema_errors",
]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON value in ``text``; raises ``ValueError`` when there is none."""
    stripped = text.strip()
    candidates = [m.group(1).strip() for m in _FENCE.finditer(stripped)] + [stripped]
    # strict=False: small models put raw newlines inside strings; accept them rather than
    # fall through to an inner object and report the wrong problem.
    decoder = json.JSONDecoder(strict=False)
    for candidate in candidates:
        try:
            return json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            pass
        for match in re.finditer(r"[\[{]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            return value
    snippet = stripped[:200] + ("…" if len(stripped) > 200 else "")
    raise ValueError(f"the reply contains no JSON value: {snippet!r}")


def parse_json(text: str, what: str) -> Any:
    """``text`` parsed as JSON, or :class:`ModelResponseError` saying what was not JSON."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise ModelResponseError(f"{what} is not JSON: {text[:200]!r}") from exc


def schema_errors(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every way ``instance`` fails ``schema``, as readable lines; empty when it is valid."""
    try:
        import jsonschema
    except ImportError:
        return _Validator(schema).errors(instance, schema, "$")
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{_path(list(e.absolute_path))}: {e.message}" for e in found]


def _path(parts: list[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class _Validator:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node  # type: ignore[no-any-return]

    def _is_type(self, value: Any, name: str) -> bool:
        if name in ("integer", "number") and isinstance(value, bool):
            return False
        if name == "integer" and isinstance(value, float):
            return value.is_integer()
        return isinstance(value, _TYPES.get(name, (object,)))

    def errors(self, value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
        if "$ref" in schema:
            return self.errors(value, self._resolve(schema["$ref"]), path)
        out: list[str] = []
        expected = schema.get("type")
        if expected is not None:
            names = [expected] if isinstance(expected, str) else list(expected)
            if not any(self._is_type(value, n) for n in names):
                return [f"{path}: {value!r} is not of type {' or '.join(names)}"]
        if "enum" in schema and value not in schema["enum"]:
            out.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
        if "const" in schema and value != schema["const"]:
            out.append(f"{path}: {value!r} is not {schema['const']!r}")
        for sub in schema.get("allOf", ()):
            out += self.errors(value, sub, path)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                passing = [s for s in schema[key] if not self.errors(value, s, path)]
                if not passing or (key == "oneOf" and len(passing) > 1):
                    out.append(f"{path}: {value!r} does not match {key} of the schema")
        if isinstance(value, dict):
            out += self._object(value, schema, path)
        elif isinstance(value, (list, tuple)):
            out += self._array(list(value), schema, path)
        elif isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                out.append(f"{path}: {value!r} is shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                out.append(f"{path}: {value!r} is longer than {schema['maxLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out += self._number(value, schema, path)
        return out

    def _object(self, value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
        out = [
            f"{path}: {name!r} is a required property"
            for name in schema.get("required", ())
            if name not in value
        ]
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                out += self.errors(item, properties[key], f"{path}.{key}")
            elif extra is False:
                out.append(f"{path}: additional property {key!r} is not allowed")
            elif isinstance(extra, Mapping):
                out += self.errors(item, extra, f"{path}.{key}")
        return out

    def _array(self, value: list[Any], schema: Mapping[str, Any], path: str) -> list[str]:
        out: list[str] = []
        if len(value) < schema.get("minItems", 0):
            out.append(f"{path}: expected at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: expected at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                out += self.errors(item, items, f"{path}[{index}]")
        return out

    def _number(self, value: float, schema: Mapping[str, Any], path: str) -> list[str]:
        out: list[str] = []
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} is more than the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: {value} must be more than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(f"{path}: {value} must be less than {schema['exclusiveMaximum']}")
        return out


# Providers without a JSON-schema reply mode (Anthropic, Bedrock Converse) get structured
# output the common way: a tool whose input schema is the output schema, which the model is
# made to call. Tool input must be an object, so other schemas are wrapped in one.
OUTPUT_TOOL = "final_answer"
OUTPUT_TOOL_DESCRIPTION = "Give the final answer in the required structure."


def output_tool_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The tool input schema for ``schema`` and whether the value was wrapped."""
    if schema.get("type") == "object":
        return dict(schema), False
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"value": {k: v for k, v in schema.items() if k != "$defs"}},
        "required": ["value"],
    }
    if "$defs" in schema:
        wrapped["$defs"] = schema["$defs"]
    return wrapped, True


def output_tool_text(arguments: Any, wrapped: bool) -> str:
    """The reply text for the output tool's input."""
    if wrapped and isinstance(arguments, dict) and "value" in arguments:
        arguments = arguments["value"]
    return json.dumps(arguments)
