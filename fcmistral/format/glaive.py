"""Parsing glaive-function-calling-v2 rows ``{system, chat}`` into schemas and turns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fcmistral.format.calls import CallParseError, contains_call, parse_calls
from fcmistral.prompt import (
    END_OF_TURN,
    SYSTEM_NO_FUNCTIONS,
    SYSTEM_WITH_FUNCTIONS,
    Turn,
    render_chat,
)


class RowParseError(ValueError):
    """A row that cannot be turned into a training example."""


_TURN_START = re.compile(r"(?m)^(USER|ASSISTANT|FUNCTION RESPONSE): ?")
_ROLE_OF_TAG = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "function_response"}


@dataclass
class GlaiveRow:
    """A parsed row. ``system`` is kept verbatim; ``separator``/``trailing`` as found in ``chat``."""

    system: str
    functions: list[dict[str, Any]]
    turns: list[Turn]
    separator: str
    trailing: str

    @property
    def chat(self) -> str:
        return render_chat(self.turns, self.separator, self.trailing)

    @property
    def text(self) -> str:
        """The training text: system and chat with no separator (the system text ends in its own
        blank line)."""
        return self.system + self.chat


def parse_functions(system: str) -> list[dict[str, Any]]:
    """The JSON schemas in a SYSTEM text: concatenated objects, not a JSON list.

    Cached by text: glaive repeats the same function sets over thousands of rows. The schemas
    returned are shared between calls, so treat them as read-only.
    """
    return list(_parse_functions(system))


@lru_cache(maxsize=16384)
def _parse_functions(system: str) -> tuple[dict[str, Any], ...]:
    if system.startswith(SYSTEM_NO_FUNCTIONS.rstrip("\n")):
        return ()
    if not system.startswith(SYSTEM_WITH_FUNCTIONS):
        raise RowParseError("unknown SYSTEM header")
    body, functions, decoder = system[len(SYSTEM_WITH_FUNCTIONS):], [], json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(body) and body[pos].isspace():
            pos += 1
        if pos >= len(body):
            return tuple(functions)
        try:
            schema, pos = decoder.raw_decode(body, pos)
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested thousands deep
            raise RowParseError(f"function schema is not valid JSON at char {pos}") from err
        if not isinstance(schema, dict):
            raise RowParseError("function schema is not a JSON object")
        functions.append(schema)


def _split_body(body: str) -> tuple[str, str]:
    """Split a turn's text into content and the newlines that close it."""
    content = body.rstrip("\n")
    return content, body[len(content):]


def parse_turns(chat: str) -> tuple[list[Turn], str, str]:
    """Turns of a ``chat`` text plus the separator between turns and the text after the last.

    The separator is the one closing the first turn (``\\n\\n\\n`` in most rows, ``\\n\\n`` in
    some); rows whose separators vary still parse, and render back with the first one.
    """
    starts = list(_TURN_START.finditer(chat))
    if not starts or starts[0].start() != 0:
        raise RowParseError("chat does not start with a role tag")
    turns, closings = [], []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(chat)
        content, closing = _split_body(chat[match.end():end])
        role = _ROLE_OF_TAG[match.group(1)]
        if role == "assistant":
            content = content.rstrip()
            if content.endswith(END_OF_TURN):
                content = content[: -len(END_OF_TURN)].rstrip(" ")
        turn = Turn(role, content)
        if role == "assistant" and contains_call(content):
            try:
                turn = Turn("function_call", content, parse_calls(content))
            except CallParseError as err:
                raise RowParseError(f"turn {i}: {err}") from err
        turns.append(turn)
        closings.append(closing)
    separator = closings[0] if len(closings) > 1 and closings[0] else "\n\n\n"
    return turns, separator, closings[-1]


def parse_row(row: dict[str, Any]) -> GlaiveRow:
    """Parse one ``{system, chat}`` row; raises RowParseError with a short reason."""
    system, chat = row.get("system"), row.get("chat")
    if not isinstance(system, str) or not isinstance(chat, str):
        raise RowParseError("row has no string 'system' and 'chat'")
    turns, separator, trailing = parse_turns(chat)
    return GlaiveRow(system, parse_functions(system), turns, separator, trailing)


def openai_messages(turns: list[Turn], arguments_as_text: bool = False) -> list[dict[str, Any]]:
    """Glaive turns as OpenAI chat messages, as a client (or TRL's conversational dataset) holds them,
    with a system message the chat template ignores (the system prompt comes from the tools).
    ``arguments_as_text``: each call's arguments as a JSON string (OpenAI's own form, and the one an
    Arrow table can hold whatever the schema) rather than an object."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "ignored: the system prompt comes from the tools"}]
    for turn in turns:
        if turn.role == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments, ensure_ascii=False) if arguments_as_text else call.arguments}}
                for i, call in enumerate(turn.calls)]})
        else:
            messages.append({"role": {"function_response": "tool"}.get(turn.role, turn.role), "content": turn.content})
    return messages
