"""Function schemas: reading them from the file formats users have, and checking call arguments.

Accepted by ``load_schemas``:
- glaive style (``custom_function.txt``): optional SYSTEM header, then concatenated JSON schemas;
- a JSON list of schemas, or an OpenAI ``tools`` list (``{"type": "function", "function": {...}}``);
- Nexusflow ``standardized_api_list`` rows (JSON list or JSONL of ``{name, description, args_dicts}``),
  converted by ``schema_from_api_entry``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable

from fcmistral.errors import UserError
from fcmistral.format.calls import arguments_schema
from fcmistral.format.glaive import RowParseError, parse_functions
from fcmistral.inputs import read_utf8
from fcmistral.prompt import SYSTEM_WITH_FUNCTIONS

PYTHON_TO_JSON_TYPE = {
    "str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
    "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "array": "array",
    "dict": "object", "object": "object",
}

# Schemas are data from users and, through the server, from any client: checking one must never
# fetch a URL or a file, and must take bounded time (issue 27). Hence these limits, references
# that resolve only inside the schema, and RE2 for `pattern` (linear time: Python's `re` takes
# exponential time on patterns like ^(a+)+$).
MAX_SCHEMA_BYTES = 16_384  # one function's parameters as JSON; the meta-schema check costs ~8 us per byte
MAX_SCHEMA_DEPTH = 32
MAX_EXPANDED_NODES = 10_000  # the schema with every $ref replaced by its target (catches doubling chains)
_RE2 = re2.Options()
_RE2.log_errors = False


@lru_cache(maxsize=256)
def _regex(pattern: str):
    return re2.compile(pattern, _RE2)


def _pattern(validator, pattern: str, instance: Any, schema: dict[str, Any]):
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# jsonschema's own validator with `pattern` matched by RE2; no registry retrieval (see validate_arguments).
_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


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
    size = len(json.dumps(parameters))
    if size > MAX_SCHEMA_BYTES:
        raise UserError(f"function {item['name']!r}: 'parameters' is {size} bytes; at most {MAX_SCHEMA_BYTES}")
    problem = _bounded_problem(parameters)
    if problem:
        raise UserError(f"function {item['name']!r}: 'parameters' {problem}")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.path) or "parameters"
        raise UserError(f"function {item['name']!r}: 'parameters' is not a valid JSON Schema at {where}: "
                        f"{err.message}") from None
    return item


def _bounded_problem(schema: dict[str, Any]) -> str | None:
    """Why checking arguments against ``schema`` could reach outside it or take unbounded time:
    too deep, a reference that is not inside the schema or that refers to itself, too large once
    references are followed, a `pattern` RE2 cannot run, `patternProperties` (matched by Python's
    `re` inside jsonschema). None when it is bounded."""
    stack, refs = [(schema, 0)], []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"is nested deeper than {MAX_SCHEMA_DEPTH} levels"
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef"):
                    if not isinstance(value, str) or not value.startswith("#"):
                        return f"refers outside itself ({key} {str(value)[:60]!r}): references are never fetched"
                    refs.append(value)
                elif key == "patternProperties":
                    return "uses patternProperties, which is not supported (list the properties)"
                elif key == "pattern" and isinstance(value, str):
                    try:
                        _regex(value)
                    except re2.error:
                        return f"has a pattern RE2 cannot run ({value[:60]!r}): no backreferences or lookaround"
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    if refs and _expanded_nodes(schema, schema, frozenset(), {}) > MAX_EXPANDED_NODES:
        return f"is larger than {MAX_EXPANDED_NODES} nodes once its references are followed, or refers to itself"
    return None


def _expanded_nodes(root: dict[str, Any], node: Any, seen: frozenset, memo: dict[int, int]) -> int:
    """Nodes of ``node`` with local references followed (a cycle counts as too many)."""
    if isinstance(node, dict) and isinstance(node.get("$ref", node.get("$dynamicRef")), str):
        ref = node.get("$ref", node.get("$dynamicRef"))
        if ref in seen:
            return MAX_EXPANDED_NODES + 1
        target = _pointer(root, ref)
        if target is None:
            return 1  # unresolvable: jsonschema reports it when arguments are checked
        key = id(target)
        if key not in memo:
            memo[key] = _expanded_nodes(root, target, seen | {ref}, memo)
        return 1 + memo[key]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    total = 1
    for child in children:
        total += _expanded_nodes(root, child, seen, memo)
        if total > MAX_EXPANDED_NODES:
            break
    return total


def _pointer(root: Any, ref: str) -> Any:
    """The part of ``root`` a local reference ("#", "#/$defs/x") points to, or None."""
    node = root
    for part in ref.removeprefix("#").lstrip("/").split("/") if ref not in ("#", "#/") else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


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
    is fine: JSON Schema validation by ``jsonschema`` of ``arguments_schema``."""
    parameters = arguments_schema(schema)
    # An empty registry: references resolve inside the schema only, never by fetching a URL or file.
    try:
        errors = sorted(_Validator(parameters, registry=Registry()).iter_errors(arguments), key=lambda e: list(e.path))
    except (Unresolvable, RecursionError) as err:
        return [f"the schema cannot be used to check arguments: {type(err).__name__}"]
    return [f"argument '{'/'.join(map(str, e.path))}': {e.message}" if e.path else e.message for e in errors]
