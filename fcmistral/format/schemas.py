"""Function schemas: reading them from the file formats users have, and checking call arguments.

Accepted by ``load_schemas``:
- glaive style (``custom_function.txt``): optional SYSTEM header, then concatenated JSON schemas;
- a JSON list of schemas, or an OpenAI ``tools`` list (``{"type": "function", "function": {...}}``);
- Nexusflow ``standardized_api_list`` rows (JSON list or JSONL of ``{name, description, args_dicts}``),
  converted by ``schema_from_api_entry``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from fcmistral.errors import UserError
from fcmistral.format.glaive import RowParseError, parse_functions
from fcmistral.inputs import read_utf8
from fcmistral.prompt import SYSTEM_WITH_FUNCTIONS

PYTHON_TO_JSON_TYPE = {
    "str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
    "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "array": "array",
    "dict": "object", "object": "object",
}


def _json_type(python_type: str) -> str:
    base = str(python_type).split("[")[0].split("|")[0].strip().lower()
    return PYTHON_TO_JSON_TYPE.get(base, "string")


def schema_from_api_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A Nexusflow ``standardized_api_list`` entry as a glaive/JSON-schema function."""
    properties, required = {}, []
    for arg in entry.get("args_dicts") or []:
        prop = {"type": _json_type(arg.get("type", "str")), "description": arg.get("description") or ""}
        if arg.get("default") not in (None, "None", ""):
            prop["description"] += f" (default: {arg['default']})"
        properties[arg["name"]] = prop
        if arg.get("required"):
            required.append(arg["name"])
    return {"name": entry["name"], "description": entry.get("description") or "",
            "parameters": {"type": "object", "properties": properties, "required": required}}


def normalize_schema(item: Any) -> dict[str, Any]:
    """One schema from any accepted shape (plain, OpenAI tool, Nexusflow api entry), checked now
    rather than when the model first calls it: its ``parameters`` must be a valid JSON Schema."""
    if not isinstance(item, dict):
        raise UserError(f"a function definition must be a JSON object, got {type(item).__name__}")
    if item.get("type") == "function" and isinstance(item.get("function"), dict):
        item = item["function"]
    if "args_dicts" in item:
        return schema_from_api_entry(item)
    if not isinstance(item.get("name"), str):
        raise UserError(f"a function definition has no 'name': {json.dumps(item)[:80]}")
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise UserError(f"function {item['name']!r}: 'parameters' must be a JSON Schema object, "
                        f"got {type(parameters).__name__}")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.path) or "parameters"
        raise UserError(f"function {item['name']!r}: 'parameters' is not a valid JSON Schema at {where}: "
                        f"{err.message}") from None
    return item


def parse_function_text(text: str, source: str = "functions") -> list[dict[str, Any]]:
    stripped = text.strip()
    if not stripped:
        raise UserError(f"{source} is empty")
    if stripped.startswith("["):
        try:
            return [normalize_schema(x) for x in json.loads(stripped)]
        except json.JSONDecodeError as err:
            raise UserError(f"{source} is not a valid JSON list: {err}") from err
    try:
        if stripped.startswith("SYSTEM:"):
            schemas = parse_functions(text.lstrip())
        else:
            schemas = parse_functions(SYSTEM_WITH_FUNCTIONS + text)
    except RowParseError as err:
        raise UserError(f"{source}: {err}") from err
    return [normalize_schema(s) for s in schemas]


def load_schemas(path: str | Path) -> list[dict[str, Any]]:
    functions = parse_function_text(read_utf8(path, "functions file"), str(path))
    if not functions:
        raise UserError(f"{str(path)!r} declares no function")
    return functions


def validate_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """Problems with a call's arguments against its (already checked) schema, empty when the call
    is fine: JSON Schema validation by ``jsonschema``.

    One deliberate difference from plain JSON Schema: an argument the schema does not declare is
    an error when the schema lists its properties (``additionalProperties`` defaults to false
    here). A model inventing an argument name is the most common wrong call, and a function would
    reject it anyway with a TypeError.
    """
    parameters = dict(schema.get("parameters") or {})
    if parameters.get("properties") and "additionalProperties" not in parameters:
        parameters["additionalProperties"] = False
    errors = sorted(Draft202012Validator(parameters).iter_errors(arguments), key=lambda e: list(e.path))
    return [f"argument '{'/'.join(map(str, e.path))}': {e.message}" if e.path else e.message for e in errors]
