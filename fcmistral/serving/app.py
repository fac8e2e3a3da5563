"""The OpenAI-compatible API: ``/v1/chat/completions`` (tools, streaming), ``/v1/completions``,
``/v1/models``, served by uvicorn (see ``server.py``), generation batched by ``engine.py``.

Semantics, where the glaive format decides them:
- ``tool_choice`` ``"required"`` writes the start of a call (``<functioncall> {"name": "``) into
  the prompt and a named function writes the call up to its arguments: the model continues from
  there, so the call is certain, not hoped for. ``"none"`` (and a request without tools) uses the
  no-functions system prompt and stops at a call marker, so the reply is text.
- Every call is checked before it is returned: its function must be among this request's tools,
  its arguments must be valid JSON (no NaN) and pass the tool's JSON schema. A reply whose call
  fails is answered once more, with the failure given to the model as a FUNCTION RESPONSE (as a
  tool would report it); if the second reply fails too, its text is returned as ``content`` with
  ``finish_reason`` ``"stop"`` and no ``tool_calls``. A call cut by ``max_tokens`` is returned as
  text with ``finish_reason`` ``"length"``.
- A text reply after which the model starts another assistant turn (it writes ``ASSISTANT:`` next,
  glaive's "let me check, then call") is followed by that turn, as in the terminal chat: the
  response holds both (the text as ``content``, the call as ``tool_calls``).
- Streaming: text deltas as they are generated (what could still become the call marker or the end
  marker is held back, so neither leaks). A call is streamed once it is complete and checked, as
  OpenAI streams one: a first chunk with ``index``, ``id``, ``type`` and the name, then chunks
  appending ``arguments`` fragments.
- ``temperature`` 0 is greedy; absent, the server's default (greedy unless started with
  ``--do_sample``). ``seed`` makes a sampled reply repeatable. ``usage`` counts both replies when a
  call was retried.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from openai.types import Completion, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fcmistral.format.calls import partial_marker_length, try_parse_calls
from fcmistral.format.schemas import validate_arguments
from fcmistral.prompt import (
    FUNCTION_CALL_MARKER,
    FunctionCall,
    Turn,
    build_system_prompt,
    format_call,
    generation_prompt,
    turn_continuation_prompt,
)
from fcmistral.serving.chat import PEEK_TOKENS, starts_assistant_turn
from fcmistral.serving.engine import GenerationRequest, Streaming, Update
from fcmistral.serving.openai_api import (
    ChatRequest,
    CompletionRequest,
    RequestError,
    SamplingFields,
    request_functions,
    request_turns,
)

log = logging.getLogger(__name__)
ARGUMENT_FRAGMENTS = 4  # chunks a streamed call's arguments are split into


@dataclass
class Limits:
    """What one request may ask for (the server's options)."""

    max_request_bytes: int = 1 << 20
    max_prompt_tokens: int = 8192
    max_tokens: int = 400  # the default reply length, and the most a request may ask for
    body_timeout_s: float = 30.0
    temperature: float = 0.0  # used when a request gives none
    top_p: float = 1.0


@dataclass
class Reply:
    """A checked reply: text content, calls (only valid ones), finish reason, token counts."""

    content: str | None
    calls: list[FunctionCall]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def forced_prefix(tool_choice: Any, names: list[str]) -> str:
    """The start of the reply that ``tool_choice`` writes for the model (derived from format_call)."""
    if tool_choice == "required":
        text = format_call("", {})
        return text[: text.index('""') + 1]
    if tool_choice is not None and not isinstance(tool_choice, str):
        name = tool_choice.function.name
        if name not in names:
            raise RequestError(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
        text = format_call(name, {})
        return text[: text.rindex("'{}'") + 1]
    return ""


def check_calls(text: str, functions: list[dict[str, Any]]) -> tuple[list[FunctionCall], str | None]:
    """The calls in ``text`` and, if any is unusable, why (see the module docstring)."""
    calls, error = try_parse_calls(text)
    if error:
        return [], f"the call could not be read: {error}"
    schemas = {f["name"]: f for f in functions}
    for call in calls:
        if call.name not in schemas:
            return [], f"function {call.name!r} is not available; available: {', '.join(schemas)}"
        try:
            json.dumps(call.arguments, allow_nan=False)
        except ValueError:
            return [], f"the arguments of {call.name!r} hold NaN or Infinity, which JSON does not allow"
        problems = validate_arguments(schemas[call.name], call.arguments)
        if problems:
            return [], f"invalid arguments for {call.name!r}: {'; '.join(problems)}"
    return calls, None


def sampling(request: SamplingFields, limits: Limits, prompt: str, prompt_ids: list[int],
             stops: tuple[str, ...] = ()) -> GenerationRequest:
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens or limits.max_tokens
    if max_tokens > limits.max_tokens:
        raise RequestError(f"max_tokens {max_tokens} is more than this server allows ({limits.max_tokens})",
                           param="max_tokens")
    temperature = limits.temperature if request.temperature is None else request.temperature
    return GenerationRequest(prompt, max_tokens, temperature, request.top_p or limits.top_p,
                             request.stops() + stops, request.seed, prompt_ids)


class ChatCompletions:
    """One chat request: its prompt, generation (with one retry of an unusable call), the reply."""

    def __init__(self, request: ChatRequest, engine: Streaming, limits: Limits) -> None:
        self.request, self.engine, self.limits = request, engine, limits
        self.functions = request_functions(request)
        choice = request.tool_choice
        if not self.functions and choice not in (None, "none", "auto"):
            raise RequestError("tool_choice asks for a call but the request has no tools", param="tool_choice")
        self.calls_allowed = bool(self.functions) and choice != "none"
        self.prefix = forced_prefix(choice, [f["name"] for f in self.functions]) if self.calls_allowed else ""
        self.turns = request_turns(request)
        self.system = build_system_prompt(self.functions if self.calls_allowed else [])
        self.generation = self._generation(self.turns)
        self.prompt_tokens = self.completion_tokens = 0

    def _generation(self, turns: list[Turn]) -> GenerationRequest:
        prompt = generation_prompt(self.system, turns) + (" " + self.prefix if self.prefix else "")
        prompt_ids = check_prompt(prompt, self.engine, self.limits)
        return sampling(self.request, self.limits, prompt, prompt_ids,
                        () if self.calls_allowed else (FUNCTION_CALL_MARKER,))

    def _count(self, update: Update) -> None:
        if update.finish_reason == "error":
            raise RuntimeError("generation failed")
        self.prompt_tokens += update.prompt_tokens
        self.completion_tokens += update.completion_tokens

    async def finish(self, text: str, last: Update) -> Reply:
        """The checked reply, from the text of the first generation (already done).

        A text turn after which the model starts another assistant turn (glaive's "let me check,
        then call" pattern: the tag it writes next says so) is followed by that turn, as in chat.
        """
        content, calls, finish = await self._turn(self.turns, text, last)
        if calls or finish != "stop" or not self.calls_allowed or self.prefix or not content:
            return self._reply(content, calls, finish)
        turns = [*self.turns, Turn("assistant", content)]
        peek = await self.engine.generate(GenerationRequest(turn_continuation_prompt(self.system, turns), PEEK_TOKENS))
        self._count(peek)
        if not starts_assistant_turn(peek.text):
            return self._reply(content, calls, finish)
        second = await self.engine.generate(self._generation(turns))
        more, calls, finish = await self._turn(turns, second.text, second)
        return self._reply("\n\n".join(c for c in (content, more) if c) or None, calls, finish)

    async def _turn(self, turns: list[Turn], text: str, last: Update) -> tuple[str | None, list[FunctionCall], str]:
        """One assistant turn checked: (content, valid calls, finish reason), retrying an unusable call once."""
        self._count(last)
        text = (self.prefix + text).strip()
        marker = text.find(FUNCTION_CALL_MARKER) if self.calls_allowed else -1
        if marker < 0 or last.finish_reason == "length":  # text, or a call cut short: returned as text
            return text, [], last.finish_reason
        calls, problem = check_calls(text, self.functions)
        if problem:
            log.info("a reply's call is unusable, asking once more: %s", problem)
            told = [*turns, Turn("function_call", text[marker:]),
                    Turn("function_response", json.dumps({"error": problem}))]
            second = await self.engine.generate(self._generation(told))
            self._count(second)
            if second.finish_reason == "length":
                return text, [], "stop"
            calls, problem = check_calls(self.prefix + second.text, self.functions)
            if problem:
                log.info("the second reply's call is unusable too, returned as text: %s", problem)
                return text, [], "stop"
        return text[:marker].strip() or None, calls, "tool_calls"

    def _reply(self, content: str | None, calls: list[FunctionCall], finish: str) -> Reply:
        return Reply(content, calls, finish, self.prompt_tokens, self.completion_tokens)


def check_prompt(prompt: str, engine: Streaming, limits: Limits) -> list[int]:
    """The prompt's tokens, once they fit the limit. (Lone surrogates never get this far: the JSON
    parser refuses them.)"""
    ids = engine.encode(prompt)
    if len(ids) > limits.max_prompt_tokens:
        raise RequestError(f"the prompt is {len(ids)} tokens; this server allows {limits.max_prompt_tokens}",
                           param="messages", code="context_length_exceeded")
    return ids


def tool_call_dicts(calls: list[FunctionCall]) -> list[dict[str, Any]]:
    return [{"index": i, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(calls)]


def usage(reply: Reply | Update, prompt_tokens: int | None = None) -> CompletionUsage:
    p = reply.prompt_tokens if prompt_tokens is None else prompt_tokens
    return CompletionUsage(prompt_tokens=p, completion_tokens=reply.completion_tokens,
                           total_tokens=p + reply.completion_tokens)


def dump(model: BaseModel) -> str:
    return model.model_dump_json(exclude_unset=True)


def create_app(engine: Streaming, model_name: str, limits: Limits | None = None,
               api_key: str | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="fcmistral", docs_url=None, redoc_url=None, openapi_url=None)

    def error(err: RequestError) -> JSONResponse:
        kind = "invalid_request_error" if err.status < 500 else "server_error"
        return JSONResponse({"error": {"message": str(err), "type": kind, "param": err.param, "code": err.code}},
                            status_code=err.status)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(RequestError(f"{err.detail}: {request.method} {request.url.path}", err.status_code))

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception) -> JSONResponse:
        log.exception("request failed")  # logged here; the client gets a JSON error without a traceback
        return error(RequestError("internal error while generating", 500))

    @app.middleware("http")
    async def _authorize(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(RequestError("invalid or missing API key (Authorization: Bearer KEY)", 401,
                                          code="invalid_api_key"))
        return await call_next(request)

    async def body(request: Request, kind: type[BaseModel]):
        """The request body parsed into ``kind``: at most max_request_bytes, read within the timeout."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_request_bytes:
            raise RequestError(f"the body is {declared} bytes; this server accepts {limits.max_request_bytes}", 413)
        data = bytearray()

        async def read() -> None:
            async for chunk in request.stream():
                data.extend(chunk)
                if len(data) > limits.max_request_bytes:
                    raise RequestError(f"the body is over {limits.max_request_bytes} bytes", 413)

        try:
            await asyncio.wait_for(read(), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(f"the body did not arrive within {limits.body_timeout_s:g} s", 408) from None
        try:
            return kind.model_validate_json(bytes(data))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise RequestError(f"{where}: {first['msg']}", param=str(first["loc"][0]) if first["loc"] else None) \
                from None

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list",
                "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "fcmistral"}]}

    @app.get("/health")
    async def health():
        if not engine.alive():
            return JSONResponse({"status": "the generation engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        chat_request = await body(request, ChatRequest)
        job = ChatCompletions(chat_request, engine, limits)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if chat_request.stream:
            include_usage = bool(chat_request.stream_options and chat_request.stream_options.include_usage)
            return EventSourceResponse(stream_chat(job, ident, created, include_usage), ping=15)
        update = await engine.generate(job.generation)
        reply = await job.finish(update.text, update)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in tool_call_dicts(reply.calls)]
        completion = ChatCompletion(id=ident, object="chat.completion", created=created, model=model_name,
                                    choices=[{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                                    usage=usage(reply))
        return Response(dump(completion), media_type="application/json")

    async def stream_chat(job: ChatCompletions, ident: str, created: int, include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return dump(ChatCompletionChunk(id=ident, object="chat.completion.chunk", created=created, model=model_name,
                                            choices=[{"index": 0, "delta": delta, "finish_reason": finish}]))

        yield chunk({"role": "assistant", "content": ""})
        # Sent: the first `sent` characters of the reply without its leading spaces, never trailing spaces
        # nor what may be the start of a call marker, so that the chunks add up to the non-streamed content.
        collected, sent, last = "", 0, None
        async for update in engine.stream(job.generation):
            collected, last = collected + update.text, update
            if job.prefix or update.finish_reason:  # a forced call is not text; the end is sent checked
                continue
            visible = collected.lstrip()
            marker = visible.find(FUNCTION_CALL_MARKER) if job.calls_allowed else -1
            safe = marker if marker >= 0 else len(visible) - partial_marker_length(visible, (FUNCTION_CALL_MARKER,))
            safe = len(visible[:safe].rstrip())
            if safe > sent:
                yield chunk({"content": visible[sent:safe]})
                sent = safe
        reply = await job.finish(collected, last)
        rest = (reply.content or "")[sent:]
        if rest:
            yield chunk({"content": rest})
        for call in tool_call_dicts(reply.calls):
            arguments = call["function"]["arguments"]
            yield chunk({"tool_calls": [{**call, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            step = max(1, -(-len(arguments) // ARGUMENT_FRAGMENTS))
            for start in range(0, len(arguments), step):
                piece = arguments[start:start + step]
                yield chunk({"tool_calls": [{"index": call["index"], "function": {"arguments": piece}}]})
        yield chunk({}, reply.finish_reason)
        if include_usage:
            yield dump(ChatCompletionChunk(id=ident, object="chat.completion.chunk", created=created, model=model_name,
                                           choices=[], usage=usage(reply)))
        yield "[DONE]"

    @app.post("/v1/completions")
    async def completions(request: Request):
        completion_request = await body(request, CompletionRequest)
        prompt = completion_request.prompt_text()
        generation = sampling(completion_request, limits, prompt, check_prompt(prompt, engine, limits))
        ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(text: str, finish: str | None) -> str:
            # Not a Completion: its model has no finish_reason null, which every chunk but the last carries.
            return json.dumps({"id": ident, "object": "text_completion", "created": created, "model": model_name,
                               "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]},
                              ensure_ascii=False)

        if completion_request.stream:
            include_usage = bool(completion_request.stream_options and completion_request.stream_options.include_usage)

            async def events() -> AsyncIterator[str]:
                async for update in engine.stream(generation):
                    if update.finish_reason == "error":
                        raise RuntimeError("generation failed")
                    if update.text or update.finish_reason:
                        yield chunk(update.text, update.finish_reason)
                    if update.finish_reason and include_usage:
                        yield dump(Completion(id=ident, object="text_completion", created=created, model=model_name,
                                              choices=[], usage=usage(update)))
                yield "[DONE]"

            return EventSourceResponse(events(), ping=15)
        update = await engine.generate(generation)
        if update.finish_reason == "error":
            raise RuntimeError("generation failed")
        choice = {"index": 0, "text": update.text, "finish_reason": update.finish_reason, "logprobs": None}
        completion = Completion(id=ident, object="text_completion", created=created, model=model_name,
                                usage=usage(update), choices=[choice])
        return Response(dump(completion), media_type="application/json")

    return app
