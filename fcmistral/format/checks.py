"""The one call checker: whether a call the model wrote may run, used by the terminal chat before it
runs a function and by the server before it returns a call to its client."""

from __future__ import annotations

import json
from typing import Any, Mapping

from fcmistral.format.calls import try_parse_calls
from fcmistral.format.schemas import validate_arguments
from fcmistral.prompt import FunctionCall


def call_problem(call: FunctionCall, schemas: Mapping[str, dict[str, Any]]) -> str | None:
    """Why ``call`` may not run (a function not among ``schemas``, arguments JSON cannot carry,
    arguments its schema refuses), in words the model reads back; None when it may."""
    if call.name not in schemas:
        return f"unknown function {call.name!r}; available: {', '.join(sorted(schemas))}"
    try:
        json.dumps(call.arguments, allow_nan=False)
    except ValueError:
        return f"the arguments of {call.name!r} hold NaN or Infinity, which JSON does not allow"
    problems = validate_arguments(schemas[call.name], call.arguments)
    if problems:
        return f"invalid arguments for {call.name!r}: {'; '.join(problems)}"
    return None


def check_calls(text: str, schemas: Mapping[str, dict[str, Any]]) -> tuple[list[FunctionCall], str | None]:
    """The calls in ``text`` and, if one is unreadable or may not run, why (then no call)."""
    calls, error = try_parse_calls(text)
    if error:
        return [], f"the call could not be read: {error}"
    for call in calls:
        problem = call_problem(call, schemas)
        if problem:
            return [], problem
    return calls, None
