"""The glaive-function-calling-v2 chat format: the single source of truth for the template.

Training, inference and evaluation all render text through this module, so the model sees at
inference exactly the strings it was trained on.

A rendered example is ``system + chat`` with no separator. ``chat`` is a sequence of turns, each
starting at the beginning of a line with a role tag (``USER: ``, ``ASSISTANT: ``,
``FUNCTION RESPONSE: ``) and followed by a separator (``\\n\\n\\n`` in most rows). Every assistant
turn ends with `` <|endoftext|>`` as plain text (it is not a special token of Mistral's
vocabulary). A function call is an assistant turn of the form
``<functioncall> {"name": "f", "arguments": '{"x": 1}'}`` -- arguments are a JSON object wrapped
in single quotes, so the whole call is not JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

SYSTEM_WITH_FUNCTIONS = (
    "SYSTEM: You are a helpful assistant with access to the following functions. "
    "Use them if required -\n"
)
SYSTEM_NO_FUNCTIONS = "SYSTEM: You are a helpful assistant, with no access to external functions.\n\n"

USER_TAG = "USER:"
ASSISTANT_TAG = "ASSISTANT:"
FUNCTION_RESPONSE_TAG = "FUNCTION RESPONSE:"
ROLE_TAGS = (USER_TAG, ASSISTANT_TAG, FUNCTION_RESPONSE_TAG)

END_OF_TURN = "<|endoftext|>"
FUNCTION_CALL_MARKER = "<functioncall>"
TURN_SEPARATOR = "\n\n\n"

Role = Literal["user", "assistant", "function_call", "function_response"]
TAG_OF_ROLE: dict[str, str] = {
    "user": USER_TAG,
    "assistant": ASSISTANT_TAG,
    "function_call": ASSISTANT_TAG,
    "function_response": FUNCTION_RESPONSE_TAG,
}
ASSISTANT_ROLES = ("assistant", "function_call")


@dataclass
class Turn:
    """One turn of a conversation.

    ``content`` is the text after the role tag and its space, without the separator and, for
    assistant turns, without the trailing `` <|endoftext|>``. Keeping the raw text (rather than
    only parsed calls) is what lets a parsed row render back byte for byte; ``calls`` holds the
    parsed function calls of a ``function_call`` turn (several in a parallel turn), empty when
    they were not read or could not be.
    """

    role: Role
    content: str
    calls: "list[FunctionCall]" = field(default_factory=list)

    @property
    def is_assistant(self) -> bool:
        return self.role in ASSISTANT_ROLES


@dataclass
class FunctionCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical glaive text of a call (what the model is trained to write)."""
    payload = json.dumps(arguments, ensure_ascii=False)
    return f"{FUNCTION_CALL_MARKER} {{\"name\": {json.dumps(name, ensure_ascii=False)}, \"arguments\": '{payload}'}}"


# Parallel calls, the one convention every consumer follows (training rows, chat template, parsers,
# vLLM plugin, server, terminal, Ollama template, grammar): several calls in one assistant turn, each
# on its own line, one end marker after the last; their results come back as one FUNCTION RESPONSE
# turn per call, in the calls' order. glaive v2 has one call per turn, which renders as it always has.
CALL_SEPARATOR = "\n"


def format_calls(calls: list[FunctionCall]) -> str:
    """The text of an assistant turn's calls, ``CALL_SEPARATOR`` between them."""
    return CALL_SEPARATOR.join(format_call(call.name, call.arguments) for call in calls)


def call_turn(calls: list[FunctionCall]) -> Turn:
    """An assistant turn making ``calls`` (one, or several in parallel), in the canonical text."""
    return Turn("function_call", format_calls(calls), list(calls))


def build_system_prompt(functions: list[dict[str, Any]]) -> str:
    """The SYSTEM text for a list of JSON schemas, formatted exactly as glaive does.

    One schema ends ``}\\n``; several are concatenated, each followed by ``\\n\\n`` (not a JSON
    list). No schema gives the no-functions header.
    """
    if not functions:
        return SYSTEM_NO_FUNCTIONS
    dumped = [json.dumps(schema, indent=4) for schema in functions]
    if len(dumped) == 1:
        return SYSTEM_WITH_FUNCTIONS + dumped[0] + "\n"
    return SYSTEM_WITH_FUNCTIONS + "".join(d + "\n\n" for d in dumped)


def render_turn(turn: Turn) -> str:
    """A turn's text without its separator: ``TAG content`` (+ `` <|endoftext|>`` if assistant)."""
    text = f"{TAG_OF_ROLE[turn.role]} {turn.content}"
    return text + f" {END_OF_TURN}" if turn.is_assistant else text


def render_chat(turns: list[Turn], separator: str = TURN_SEPARATOR, trailing: str | None = None) -> str:
    """The ``chat`` column: turns joined by ``separator``; ``trailing`` closes the last turn.

    ``trailing`` defaults to the separator, which is how almost all glaive rows end.
    """
    if not turns:
        return ""
    end = separator if trailing is None else trailing
    return separator.join(render_turn(t) for t in turns) + end


def generation_prompt(system: str, turns: list[Turn], separator: str = TURN_SEPARATOR) -> str:
    """The text the model continues to write its next assistant turn.

    It ends with ``ASSISTANT:`` (no trailing space): the space belongs to the first word the
    model writes, as in training, so the prompt tokenizes exactly as the same text did in
    training.
    """
    return system + render_chat(turns, separator) + ASSISTANT_TAG


def turn_continuation_prompt(system: str, turns: list[Turn], separator: str = TURN_SEPARATOR) -> str:
    """The text up to the end marker of a finished assistant turn, to read what comes next.

    Training supervises the separator and the role tag that follow each assistant turn, so the
    model's next tokens here say whether it continues with a second assistant turn (the
    "acknowledge, then call" pattern: ``ASSISTANT:``) or hands the conversation back
    (``USER:``). The prompt stops at the marker, not after the separator, because trailing
    newlines tokenize differently at the end of a text than before a tag.
    """
    return system + render_chat(turns, separator, trailing="")
