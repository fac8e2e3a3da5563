"""The vLLM tool-parser plugin: its streaming reader (no vLLM needed), the plugin class against
stand-ins of the vLLM classes it uses (checks our side of the interface), and against vLLM itself
when it is importable (it is not on this CPU machine: that test skips with the reason)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from pydantic import BaseModel

from fcmistral.format.calls import parse_calls, split_reply
from fcmistral.format.streams import CallStream, partial_marker_length
from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER, format_call
from tests.conftest import REPO

PLUGIN = REPO / "fcmistral" / "serving" / "vllm_tool_parser.py"
WEATHER = format_call("get_current_weather", {"location": "Paris", "note": "it's {'quoted'}"})
TAX = format_call("calculate_tax", {"income": 50000})
REPLIES = [
    " It is sunny.",
    f" {WEATHER} {END_OF_TURN}",
    f" Let me check. {WEATHER}",
    f" {WEATHER} {TAX} {END_OF_TURN}",
    f" {WEATHER} {END_OF_TURN}\n\n\nASSISTANT: {TAX}",
    " The <function is not a call, and neither is <functioncall",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_call_stream_fed_a_character_at_a_time(reply):
    """Text and calls come out in order, each call as soon as its text is complete, and together they
    equal what the whole-reply parser reads."""
    stream, text, calls, complete_at = CallStream(), "", [], []
    for end in range(1, len(reply) + 1):
        new_text, new_calls = stream.feed(reply[:end])
        text += new_text
        calls += new_calls
        complete_at += [end] * len(new_calls)
    turn = reply.split(END_OF_TURN)[0]  # the stream reads one turn: engines stop at its end marker
    before, payloads = split_reply(turn)
    assert calls == (parse_calls(turn) if payloads else [])
    held = 0 if payloads else partial_marker_length(before, (FUNCTION_CALL_MARKER, END_OF_TURN))
    assert text == before[: len(before) - held]  # a stream never shows what may start a marker
    assert "<functioncall>" not in text and END_OF_TURN not in text
    for position, call in zip(complete_at, calls):  # each call is out by the time its own text has ended
        assert reply[:position].rstrip().endswith("'}")


class _Model(BaseModel):
    model_config = {"extra": "allow"}


def vllm_stand_ins() -> dict[str, types.ModuleType]:
    """Modules with the names and fields the plugin uses from vLLM 0.24 (nothing else)."""
    class ChatCompletionRequest(_Model):
        stop: str | list[str] | None = None

    class FunctionCall(_Model):
        name: str
        arguments: str

    class ToolCall(_Model):
        id: str
        type: str
        function: FunctionCall

    class DeltaFunctionCall(_Model):
        name: str | None = None
        arguments: str | None = None

    class DeltaToolCall(_Model):
        index: int
        id: str | None = None
        type: str | None = None
        function: DeltaFunctionCall | None = None

    class DeltaMessage(_Model):
        content: str | None = None
        tool_calls: list[DeltaToolCall] = []

    class ExtractedToolCallInformation(_Model):
        tools_called: bool
        tool_calls: list[ToolCall]
        content: str | None = None

    class ToolParser:
        def __init__(self, tokenizer, tools=None):
            self.model_tokenizer, self.tools = tokenizer, tools
            self.prev_tool_call_arr, self.streamed_args_for_tool = [], []

        def adjust_request(self, request):
            return request

    class ToolParserManager:
        tool_parsers: dict = {}

        @classmethod
        def register_module(cls, name):
            def register(parser):
                cls.tool_parsers[name] = parser
                return parser
            return register

        @classmethod
        def get_tool_parser(cls, name):
            return cls.tool_parsers[name]

    modules = {}
    for name, members in {
        "vllm.entrypoints.openai.chat_completion.protocol": [ChatCompletionRequest],
        "vllm.entrypoints.generate.base.protocol": [DeltaFunctionCall, DeltaMessage, DeltaToolCall,
                                                    ExtractedToolCallInformation, FunctionCall, ToolCall],
        "vllm.tool_parsers.abstract_tool_parser": [ToolParser, ToolParserManager],
    }.items():
        module = types.ModuleType(name)
        for member in members:
            setattr(module, member.__name__, member)
        modules[name] = module
    for parent in ("vllm", "vllm.entrypoints", "vllm.entrypoints.openai", "vllm.entrypoints.openai.chat_completion",
                   "vllm.entrypoints.generate", "vllm.entrypoints.generate.base", "vllm.tool_parsers"):
        modules[parent] = types.ModuleType(parent)
    return modules


def check_plugin(manager, request_class) -> None:
    """The registered parser reads calls whole and streamed, and stops requests at the end marker."""
    parser_class = manager.get_tool_parser("glaive")
    parser = parser_class(tokenizer=None, tools=None)
    request = request_class(stop="STOP")
    assert parser.adjust_request(request).stop == ["STOP", END_OF_TURN]

    whole = parser.extract_tool_calls(f" Let me check. {WEATHER} {TAX}", request)
    assert whole.tools_called and whole.content == "Let me check."
    assert [(c.function.name, c.function.arguments) for c in whole.tool_calls] == [
        ("get_current_weather", '{"location": "Paris", "note": "it\'s {\'quoted\'}"}'),
        ("calculate_tax", '{"income": 50000}')]
    broken = parser.extract_tool_calls(' <functioncall> {"name": "x", "arguments": \'{"a', request)
    assert not broken.tools_called and broken.content.startswith(" <functioncall>")

    streaming = parser_class(tokenizer=None, tools=None)
    reply, previous, content, calls = f" Let me check. {WEATHER} {TAX}", "", "", {}
    for end in range(1, len(reply) + 1):
        current = reply[:end]
        delta = streaming.extract_tool_calls_streaming(previous, current, current[len(previous):], [], [], [], request)
        previous = current
        if delta is None:
            continue
        content += delta.content or ""
        for call in delta.tool_calls:
            assert call.index not in calls and call.id and call.type == "function"
            calls[call.index] = (call.function.name, call.function.arguments)
    assert content.strip() == whole.content
    assert [calls[i] for i in sorted(calls)] == [(c.function.name, c.function.arguments) for c in whole.tool_calls]
    assert streaming.streamed_args_for_tool == [calls[i][1] for i in sorted(calls)]


def load_plugin(name: str = "glaive_plugin_under_test"):
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_against_stand_ins_of_vllm(monkeypatch):
    for name, module in vllm_stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    load_plugin()
    stand_ins = sys.modules["vllm.tool_parsers.abstract_tool_parser"]
    check_plugin(stand_ins.ToolParserManager,
                 sys.modules["vllm.entrypoints.openai.chat_completion.protocol"].ChatCompletionRequest)


def test_plugin_in_vllm():
    pytest.importorskip("vllm", reason="vLLM is not installed (it needs a GPU build; 0.24 was targeted)")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    ToolParserManager.import_tool_parser(str(PLUGIN))
    check_plugin(ToolParserManager, lambda stop: ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "x"}], stop=stop))


def test_an_incomplete_call_is_not_sent():
    assert CallStream().feed(format_call("f", {})[:-1]) == ("", [])
    assert CallStream().feed(format_call("f", {}))[1] == parse_calls(format_call("f", {}))
