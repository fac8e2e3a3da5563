"""Robust parsing of glaive function calls, as written in the data and by a model.

The glaive call ``<functioncall> {"name": "f", "arguments": '{"x": "let's go"}'}`` is not JSON
(the arguments are a JSON object wrapped in single quotes, apostrophes inside stay raw), and the
real data adds variants: a bare object, a ``"parameters"`` key, ``\\'`` escapes, ``Infinity``,
an extra closing brace, text before the marker. Deleting every ``'`` before ``json.loads`` (the
obvious shortcut) corrupts values that contain apostrophes; this parser never alters a value.

A reply may hold several calls (BFCL's parallel questions ask for them): ``parse_calls`` reads
every marker, in one turn or in consecutive assistant turns, and stops where the model starts
writing the other side of the conversation (a ``USER:`` or ``FUNCTION RESPONSE:`` line), so a
complete call followed by an invented user turn still counts. A marker written inside an argument
value would split that call: models do not write one, and the glaive data holds none.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fcmistral.prompt import (
    ASSISTANT_TAG,
    END_OF_TURN,
    FUNCTION_CALL_MARKER,
    FUNCTION_RESPONSE_TAG,
    USER_TAG,
    FunctionCall,
)


class CallParseError(ValueError):
    """The text holds a function call that cannot be read."""


# The call's head up to the quote that opens its arguments; what follows is read from the end by
# _quoted_arguments (a single regex for the tail, '(?P<args>.*)'\s*\}\s*\}?\s*$, backtracked
# quadratically over runs of spaces: 8,000 of them took 1.4 s).
_QUOTED_HEAD = re.compile(r"""^\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*'""",
                          re.DOTALL)


def _quoted_arguments(payload: str) -> tuple[str, str] | None:
    """The name and the quoted arguments' text of ``{"name": "...", "arguments": '...'}`` (with
    an optional extra closing brace, as glaive sometimes writes), or None. The arguments end at the
    last quote that the closing brace(s) follow, as a greedy match would end them."""
    head = _QUOTED_HEAD.match(payload)
    if head is None:
        return None
    rest = payload[head.end():].rstrip()
    if not rest.endswith("}"):
        return None
    rest = rest[:-1].rstrip()
    if rest.endswith("'"):
        return head["name"], rest[:-1]
    if rest.endswith("}"):
        rest = rest[:-1].rstrip()
        if rest.endswith("'"):
            return head["name"], rest[:-1]
    return None


# A line that starts another speaker's turn ends the reply; one that starts a further assistant
# turn ends the call before it.
_OTHER_SPEAKER = re.compile(rf"(?m)^(?:{re.escape(USER_TAG)}|{re.escape(FUNCTION_RESPONSE_TAG)})")
_NEXT_ASSISTANT_TURN = re.compile(rf"(?m)^{re.escape(ASSISTANT_TAG)}")


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


def parse_payload(payload: str) -> FunctionCall:
    """One call from the text after its marker, cut at the end of its turn."""
    for end in (payload.find(END_OF_TURN), _first_match(_NEXT_ASSISTANT_TURN, payload)):
        if end >= 0:
            payload = payload[:end]
    payload = payload.strip()
    quoted = _quoted_arguments(payload)
    if quoted:
        raw_name, arguments = quoted
        try:
            name = json.loads(f'"{raw_name}"')
        except json.JSONDecodeError as err:  # a broken escape such as \u12
            raise CallParseError(f"unreadable function name: {raw_name[:80]!r}") from err
        return FunctionCall(name, _arguments_from_text(arguments))
    try:  # a call that is plain JSON (bare arguments object), possibly with trailing junk
        obj, _ = json.JSONDecoder().raw_decode(payload)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CallParseError(f"unreadable call: {payload[:80]!r}") from err
    return _from_json_object(obj)


def _first_match(pattern: re.Pattern, text: str) -> int:
    match = pattern.search(text)
    return match.start() if match else -1


def split_reply(text: str) -> tuple[str, list[str]]:
    """The reply's text before its first call marker, and the text after each marker; the reply
    ends where another speaker's line starts."""
    end = _first_match(_OTHER_SPEAKER, text)
    before, *payloads = (text if end < 0 else text[:end]).split(FUNCTION_CALL_MARKER)
    return before, payloads


def parse_calls(text: str) -> list[FunctionCall]:
    """Every call in a reply, in order (text before a marker is allowed and ignored).

    Raises CallParseError with a short reason when there is no marker or any call is unreadable:
    a reply with one broken call among good ones is a broken reply.
    """
    _, payloads = split_reply(text)
    if not payloads:
        raise CallParseError("no <functioncall> marker")
    return [parse_payload(payload) for payload in payloads]


def parse_call(text: str) -> FunctionCall:
    """The one call of an assistant turn; CallParseError when there is none, it is unreadable, or
    the turn holds more than one."""
    calls = parse_calls(text)
    if len(calls) > 1:
        raise CallParseError(f"{len(calls)} calls where one was expected")
    return calls[0]


def try_parse_call(text: str) -> tuple[FunctionCall | None, str | None]:
    """``(call, None)`` or ``(None, reason)``: for inference, where failure is data."""
    try:
        return parse_call(text), None
    except CallParseError as err:
        return None, str(err)


def try_parse_calls(text: str) -> tuple[list[FunctionCall], str | None]:
    """``(calls, None)`` or ``([], reason)``: for scoring, where failure is data."""
    try:
        return parse_calls(text), None
    except CallParseError as err:
        return [], str(err)


def arguments_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema a call's arguments must meet, for the checker and the call grammar alike
    (here, with no dependency, so that the grammar loads in vLLM's own environment).

    One deliberate difference from plain JSON Schema: an argument the function does not declare is
    an error when its parameters list their properties (``additionalProperties`` defaults to false
    at the top level, as in OpenAI's strict mode; BFCL's checker fails such a call too). A model
    inventing an argument name is the most common wrong call, and a function would reject it
    anyway with a TypeError.
    """
    parameters = dict(function.get("parameters") or {})
    if parameters.get("properties") and "additionalProperties" not in parameters:
        parameters["additionalProperties"] = False
    return parameters
