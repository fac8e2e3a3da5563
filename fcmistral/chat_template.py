"""The glaive format as a Jinja chat template, generated from fcmistral.prompt.

Saved in every tokenizer the project writes, so that ``tokenizer.apply_chat_template(messages,
tools=...)`` (and engines that use it) render exactly the text the model was trained on. The
template is built here from prompt.py's constants, never written by hand, and the tests check it
against prompt.py's rendering on every shipped sample row.

Messages are OpenAI-style: ``system`` messages are ignored (the glaive system prompt is built from
the tools, as in training); ``user``; ``assistant`` with ``content`` and/or ``tool_calls`` (the calls
are one assistant turn after the content's, one per line when several; ``arguments`` a mapping or a
JSON string, used as given); ``tool`` (a FUNCTION RESPONSE, one per call). ``tools`` are OpenAI tool objects or plain schemas.

The same tokenizers carry a ``response_template`` (transformers' declarative reply parser, saved in
tokenizer_config.json), so ``tokenizer.parse_response(reply, prefix=prompt)`` and its streaming
``get_response_parser`` turn a reply back into an assistant message with ``content`` and
``tool_calls``. It reads the call as the model writes it (``format_call``): the name from the
call's opening, the arguments as the JSON between ``'`` and the closing ``'}`` (apostrophes inside
values are fine; a value holding ``'}`` itself would end the call early). The project's own parser
(``format.calls``) also reads the variants of the raw glaive data.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fcmistral.prompt import (
    ASSISTANT_TAG,
    CALL_SEPARATOR,
    END_OF_TURN,
    FUNCTION_CALL_MARKER,
    FUNCTION_RESPONSE_TAG,
    SYSTEM_NO_FUNCTIONS,
    SYSTEM_WITH_FUNCTIONS,
    TURN_SEPARATOR,
    USER_TAG,
    format_call,
)


def _literal(text: str) -> str:
    """``text`` as a Jinja string expression (JSON string syntax is valid Jinja)."""
    return json.dumps(text)


def chat_template() -> str:
    """The Jinja source; one line, so that no template whitespace leaks into the text."""
    sep, end = _literal(TURN_SEPARATOR), _literal(" " + END_OF_TURN)
    assistant, user, response = (_literal(tag + " ") for tag in (ASSISTANT_TAG, USER_TAG, FUNCTION_RESPONSE_TAG))
    call_open = _literal(FUNCTION_CALL_MARKER + ' {"name": ')
    return "".join([
        # The system prompt from the tools, as fcmistral.prompt.build_system_prompt writes it.
        "{%- set tools = tools or [] -%}",
        "{%- if tools | length == 0 -%}{{ ", _literal(SYSTEM_NO_FUNCTIONS), " }}",
        "{%- else -%}{{ ", _literal(SYSTEM_WITH_FUNCTIONS), " }}",
        "{%- for tool in tools -%}",
        "{%- set schema = tool.function if (tool.type is defined and tool.type == 'function' and tool.function is defined)"
        " else tool -%}",
        "{{ schema | tojson(indent=4, ensure_ascii=True) }}{{ '\\n' if tools | length == 1 else '\\n\\n' }}",
        "{%- endfor -%}{%- endif -%}",
        # Every turn is followed by the separator (fcmistral.prompt.render_chat).
        "{%- for message in messages -%}",
        "{%- if message.role == 'user' -%}{{ ", user, " + message.content + ", sep, " }}",
        "{%- elif message.role == 'tool' -%}",
        "{{ ", response, " }}{{ message.content if message.content is string else (message.content | tojson) }}",
        "{{ ", sep, " }}",
        "{%- elif message.role == 'assistant' -%}",
        "{%- if message.content -%}{% generation %}{{ ", assistant, " + message.content + ", end, " }}"
        "{% endgeneration %}{{ ", sep, " }}{%- endif -%}",
        # Its calls: one turn, CALL_SEPARATOR between them (fcmistral.prompt.format_calls).
        "{%- if message.tool_calls -%}{% generation %}{{ ", assistant, " }}",
        "{%- for call in message.tool_calls -%}",
        "{%- set call = call.function if call.function is defined else call -%}",
        "{%- set arguments = call.arguments if call.arguments is string else (call.arguments | tojson) -%}",
        "{%- if not loop.first -%}{{ ", _literal(CALL_SEPARATOR), " }}{%- endif -%}",
        "{{ ", call_open, " }}{{ call.name | tojson }}{{ \", \\\"arguments\\\": '\" + arguments + \"'}\" }}",
        "{%- endfor -%}{{ ", end, " }}{% endgeneration %}{{ ", sep, " }}{%- endif -%}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{ ", _literal(ASSISTANT_TAG), " }}{%- endif -%}",
    ])


def _loose(literal: str) -> str:
    """A regex for ``literal`` that allows any whitespace where it has spaces."""
    return re.escape(literal).replace("\\ ", r"\s*")


def response_template() -> dict[str, Any]:
    """transformers' response_template for a reply: text content, calls as ``tool_calls``."""
    name_mark = "NAME"  # a name json.dumps writes unchanged
    head, tail = format_call(name_mark, {}).split(name_mark)  # '<functioncall> {"name": "' and '", ... '{}'}'
    arguments_open, close = tail.split("{}")  # '", "arguments": \'' and "'}"
    return {
        "start_anchor": ASSISTANT_TAG,
        "defaults": {"role": "assistant"},
        "fields": {
            "content": {"repeats": True, "join": ""},  # text around calls (stripped)
            "tool_calls": {
                "open_pattern": _loose(head) + r'(?P<name>[^"]*)' + _loose(arguments_open),
                "close_pattern": _loose(close),
                "content": "json",
                "repeats": True,
                "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
            },
            "end_of_turn": {"open": END_OF_TURN, "optional": True},  # the end marker, not content
        },
    }


def add_chat_template(tokenizer) -> None:
    """Give ``tokenizer`` the glaive chat template and response template (saved with it by
    ``save_pretrained``)."""
    tokenizer.chat_template = chat_template()
    tokenizer.response_template = response_template()
