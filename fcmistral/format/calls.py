"""Robust parsing of glaive function calls, as written in the data and by a model.

The glaive call ``<functioncall> {"name": "f", "arguments": '{"x": "let's go"}'}`` is not JSON
(the arguments are a JSON object wrapped in single quotes, apostrophes inside stay raw), and the
real data adds variants: a bare object, a ``"parameters"`` key, ``\\'`` escapes, ``Infinity``,
an extra closing brace, text before the marker. Deleting every ``'`` before ``json.loads`` (the
obvious shortcut) corrupts values that contain apostrophes; this parser never alters a value.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER, FunctionCall


class CallParseError(ValueError):
    """The text holds a function call that cannot be read."""


_QUOTED_ARGUMENTS = re.compile(
    r"""^\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*
        '(?P<args>.*)'\s*\}\s*\}?\s*$""",
    re.DOTALL | re.VERBOSE,
)


def contains_call(text: str) -> bool:
    return FUNCTION_CALL_MARKER in text


def _arguments_from_text(text: str) -> dict[str, Any]:
    stripped = text.strip()
    if not stripped:
        return {}
    for candidate in (stripped, stripped.replace("\\'", "'")):
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested thousands deep
            continue
        if isinstance(value, str):  # arguments given as a JSON string holding JSON
            return _arguments_from_text(value)
        if isinstance(value, dict):
            return value
        raise CallParseError(f"arguments are a {type(value).__name__}, not an object")
    raise CallParseError(f"arguments are not valid JSON: {stripped[:80]!r}")


def _from_json_object(obj: Any) -> FunctionCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise CallParseError("the call has no string 'name'")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = _arguments_from_text(args)
    if not isinstance(args, dict):
        raise CallParseError("the call's arguments are not an object")
    return FunctionCall(obj["name"], args)


def parse_call(text: str) -> FunctionCall:
    """Parse the call in an assistant turn (text before the marker is allowed and ignored).

    Raises CallParseError with a short reason when there is no marker or the call is unreadable.
    """
    start = text.find(FUNCTION_CALL_MARKER)
    if start < 0:
        raise CallParseError("no <functioncall> marker")
    payload = text[start + len(FUNCTION_CALL_MARKER):]
    end = payload.find(END_OF_TURN)
    if end >= 0:
        payload = payload[:end]
    payload = payload.strip()
    quoted = _QUOTED_ARGUMENTS.match(payload)
    if quoted:
        try:
            name = json.loads(f'"{quoted["name"]}"')
        except json.JSONDecodeError as err:  # a broken escape such as \u12
            raise CallParseError(f"unreadable function name: {quoted['name'][:80]!r}") from err
        return FunctionCall(name, _arguments_from_text(quoted["args"]))
    try:  # a call that is plain JSON (bare arguments object), possibly with trailing junk
        obj, _ = json.JSONDecoder().raw_decode(payload)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CallParseError(f"unreadable call: {payload[:80]!r}") from err
    return _from_json_object(obj)


def try_parse_call(text: str) -> tuple[FunctionCall | None, str | None]:
    """``(call, None)`` or ``(None, reason)``: for scoring and inference, where failure is data."""
    try:
        return parse_call(text), None
    except CallParseError as err:
        return None, str(err)
