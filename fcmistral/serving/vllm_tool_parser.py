"""A vLLM tool-parser plugin for the glaive format: ``--tool-call-parser glaive``.

    vllm serve outputs/merged --enable-auto-tool-choice --tool-call-parser glaive \
        --tool-parser-plugin "$(python -c 'import fcmistral.serving as s; print(s.__path__[0])')/vllm_tool_parser.py"

Written for vLLM 0.33 (``pip install vllm==0.33.*``): its import paths (``vllm.tool_parsers``,
``vllm.entrypoints.generate.base.protocol``, ``vllm.entrypoints.openai.chat_completion.protocol``)
changed in every few releases (0.24 had ``vllm.entrypoints.openai.engine.protocol``), and its server
now wraps a tool parser in a ``DelegatingParser`` (``vllm.parser``). The parsing is the project's
own (``fcmistral.format.calls``, ``fcmistral.format.streams``, ``fcmistral.prompt``): the same code
that reads calls in training data, evaluation and the project's server, and pure Python with no
third-party imports, so the plugin loads in vLLM's own environment (whose torch and transformers
pins differ from this project's) with the repository on ``PYTHONPATH`` or ``pip install --no-deps``.

- Every request gets ``<|endoftext|>`` as a stop string: in Mistral's vocabulary it is plain
  text, so without it vLLM would generate past the end of the turn.
- ``tool_choice`` ``"required"`` or a named function: vLLM would otherwise force its own JSON
  tool-call format through structured outputs, which this model does not write; the parser reads
  the glaive call as under ``"auto"`` (``supports_required_and_named = False``, as vLLM's parsers
  for XML-style formats do).
- A reply's text before its first call is the message content; each ``<functioncall>`` becomes a
  tool call. A reply whose call cannot be read is returned as text.
- Streaming: text as it comes (holding back what could become a call marker), then each call in
  one delta (id, name and its arguments) as soon as it is complete.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager

from fcmistral.format.calls import split_reply, try_parse_calls
from fcmistral.format.streams import CallStream
from fcmistral.prompt import END_OF_TURN

PARSER_NAME = "glaive"


def _arguments(call) -> str:
    return json.dumps(call.arguments, ensure_ascii=False)


@ToolParserManager.register_module(PARSER_NAME)
class GlaiveToolParser(ToolParser):
    """Calls written ``<functioncall> {"name": ..., "arguments": '{...}'}`` (see the module doc)."""

    supports_required_and_named = False

    def __init__(self, tokenizer, tools=None) -> None:
        super().__init__(tokenizer, tools)
        self.stream = CallStream()

    def adjust_request(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        request = super().adjust_request(request)
        if hasattr(request, "stop"):  # (a Responses API request has no stop strings)
            stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
            if END_OF_TURN not in stops:
                request.stop = [*stops, END_OF_TURN]
        return request

    def extract_tool_calls(self, model_output: str, request: ChatCompletionRequest) -> ExtractedToolCallInformation:
        calls, error = try_parse_calls(model_output)
        if error:
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        before, _ = split_reply(model_output)
        return ExtractedToolCallInformation(
            tools_called=True,
            tool_calls=[ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", type="function",
                                 function=FunctionCall(name=c.name, arguments=_arguments(c))) for c in calls],
            content=before.strip() or None,
        )

    def extract_tool_calls_streaming(
        self, previous_text: str, current_text: str, delta_text: str, previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int], delta_token_ids: Sequence[int], request: ChatCompletionRequest,
    ) -> DeltaMessage | None:
        text, calls = self.stream.feed(current_text)
        deltas = []
        for call in calls:
            index, arguments = len(self.prev_tool_call_arr), _arguments(call)
            # vLLM's server compares these two at the end of a stream to send any arguments not yet sent.
            self.prev_tool_call_arr.append({"name": call.name, "arguments": arguments})
            self.streamed_args_for_tool.append(arguments)
            deltas.append(DeltaToolCall(index=index, id=f"call_{uuid.uuid4().hex[:24]}", type="function",
                                        function=DeltaFunctionCall(name=call.name, arguments=arguments)))
        if not text and not deltas:
            return None
        return DeltaMessage(content=text or None, tool_calls=deltas)
