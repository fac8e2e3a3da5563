"""The API's protocol: OpenAI request bodies as typed models, a chat request as the glaive prompt,
and the pieces of a response (usage, tool calls, JSON).

The models accept what the official client and agent frameworks send: unknown fields are ignored
(``user``, ``logprobs``: false, ...), every field this server acts on is
type-checked, and a wrong value is a 400 naming the field. Responses are built with the ``openai``
package's own models (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``).

The glaive format's system prompt is built from the tools, so ``system``/``developer`` messages
are ignored (as by the chat template); ``tool`` messages become FUNCTION RESPONSE turns and an
assistant's ``tool_calls`` become its call turns.
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from typing import Annotated, Any, Literal

from openai.types import CompletionUsage
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from fcmistral.errors import UserError
from fcmistral.format.schemas import normalize_schema
from fcmistral.prompt import FunctionCall, Turn, call_turn

MAX_TOOLS = 128  # as OpenAI's API: each tool's schema is checked (bounded, but ~8 us per byte)


class RequestError(Exception):
    """A client mistake, answered with a 4xx JSON error in OpenAI's shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: StrictStr


class OtherPart(_Lenient):
    """A part this text model cannot read (refused with a clear message, not a type error)."""

    type: Literal["image_url", "input_audio", "file", "refusal"]


Content = StrictStr | list[TextPart | OtherPart] | None


def content_text(content: Content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(not isinstance(part, TextPart) for part in content):
        raise RequestError("only text content parts are supported", param="messages")
    return "".join(part.text for part in content)


class FunctionCallPayload(_Lenient):
    name: StrictStr
    arguments: StrictStr = "{}"


class ToolCall(_Lenient):
    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCallPayload


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None


class FunctionDefinition(_Lenient):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None  # constrain this tool's calls (the server's --constrained_calls strict)


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoiceFunction(_Lenient):
    name: StrictStr


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedToolChoiceFunction


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


PositiveInt = Annotated[StrictInt, Field(ge=1)]


class SamplingFields(_Lenient):
    """Fields shared by both endpoints. ``temperature`` absent: the server's default (see --do_sample)."""

    model: StrictStr | None = None
    temperature: Annotated[float, Field(ge=0, le=2, strict=True)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1, strict=True)] | None = None
    max_tokens: PositiveInt | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    seed: StrictInt | None = None
    n: Literal[1] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops and any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatRequest(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None  # false: at most one call in a constrained reply
    max_completion_tokens: PositiveInt | None = None


class CompletionRequest(SamplingFields):
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


@lru_cache(maxsize=256)
def _checked_schema(function_json: str) -> dict[str, Any]:
    """normalize_schema, cached: agents send the same tools with every request, and checking a schema
    against the JSON Schema meta-schema costs more than the rest of a request's parsing. Bounded:
    256 schemas of at most MAX_SCHEMA_BYTES each (a failed check is not cached)."""
    return normalize_schema(json.loads(function_json))


def request_functions(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's tools as JSON schemas (their ``parameters`` checked as JSON Schema; read-only)."""
    try:
        return [_checked_schema(json.dumps(tool.function.model_dump(exclude_none=True, exclude={"strict"})))  # key order kept
                for tool in request.tools or []]
    except UserError as err:
        raise RequestError(str(err), param="tools") from err


def request_turns(request: ChatRequest) -> list[Turn]:
    """The conversation of a chat request as glaive turns (system messages dropped)."""
    turns: list[Turn] = []
    for message in request.messages:
        text = content_text(message.content)
        if message.role == "user":
            turns.append(Turn("user", text))
        elif message.role == "tool":
            turns.append(Turn("function_response", text))
        elif message.role == "assistant":
            if text.strip():
                turns.append(Turn("assistant", text.strip()))
            calls = []
            for call in message.tool_calls or []:
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except json.JSONDecodeError as err:
                    raise RequestError(f"tool_call arguments are not JSON: {err.msg}", param="messages") from None
                except RecursionError:
                    raise RequestError("tool_call arguments are nested too deeply", param="messages") from None
                if not isinstance(arguments, dict):
                    raise RequestError("tool_call arguments must be a JSON object", param="messages")
                calls.append(FunctionCall(call.function.name, arguments))
            if calls:  # several: one turn (the parallel-calls convention of fcmistral.prompt)
                turns.append(call_turn(calls))
    return turns


def tool_call_dicts(calls: list[FunctionCall]) -> list[dict[str, Any]]:
    """Calls as OpenAI tool calls, each with a new id (``index`` is for streamed chunks)."""
    return [{"index": i, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(calls)]


def usage(reply, prompt_tokens: int | None = None) -> CompletionUsage:
    """OpenAI's usage of a reply (anything with ``prompt_tokens`` and ``completion_tokens``)."""
    p = reply.prompt_tokens if prompt_tokens is None else prompt_tokens
    return CompletionUsage(prompt_tokens=p, completion_tokens=reply.completion_tokens,
                           total_tokens=p + reply.completion_tokens)


def dump(model: BaseModel) -> str:
    """A response model as JSON, without the fields left unset."""
    return model.model_dump_json(exclude_unset=True)
