"""``/v1/chat/completions``: one chat request, its full and its streamed reply side by side.

Semantics, where the glaive format decides them:
- ``tool_choice`` ``"required"`` writes the start of a call (``<functioncall> {"name": "``) into
  the prompt and a named function writes the call up to its arguments: the model continues from
  there under the call grammar (fcmistral.format.grammar), so the call is certain *and* valid, not
  hoped for. Under ``"auto"``, the grammar constrains calls as the server's ``--constrained_calls``
  says: ``never``, ``strict`` (the calls of tools marked ``"strict": true``; the others' arguments
  need only be a JSON object) or ``always``; ``parallel_tool_calls`` false allows one call.
  ``--call_bias`` makes the model call more or less often, ``--loop_penalty`` ends a call's loops,
  ``--majority_decisions`` takes a call (and a second turn) only where it holds half the probability.
  ``"none"`` (and a request without tools) uses the no-functions system prompt and stops at a call
  marker, so the reply is text.
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
  ``--do_sample``). ``seed`` makes a sampled reply repeatable (as OpenAI's: best effort, since the rows
  batched beside it can change the last bits of its logits). ``usage`` counts every generation
  (a retry, a second turn); together they stay within ``WORK_BUDGET`` times ``max_tokens``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fcmistral.constraint import CallConstraint
from fcmistral.format.grammar import call_grammar
from fcmistral.format.streams import ReplyStream
from fcmistral.prompt import (
    FUNCTION_CALL_MARKER,
    FunctionCall,
    build_system_prompt,
    format_call,
)
from fcmistral.serving.engine import EngineClient, GenerationRequest, Update
from fcmistral.serving.limits import Limits, check_prompt, checked, sampling
from fcmistral.serving.protocol import (
    ChatRequest,
    RequestError,
    dump,
    request_turns,
    tool_call_dicts,
    usage,
)
from fcmistral.turns import SERVER_POLICY, Ask, Outcome, assistant_turns, peek_constraint

log = logging.getLogger(__name__)
ARGUMENT_FRAGMENTS = 4  # chunks a streamed call's arguments are split into
WORK_BUDGET = 2  # a request's generations together make at most this many times its max_tokens


@dataclass
class CheckedReply:
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


def call_constraint(request: ChatRequest, functions: list[dict[str, Any]], prefix: str,
                    limits: Limits) -> CallConstraint | None:
    """How this request's replies are constrained (see the module docstring); None: not at all."""
    parallel = request.parallel_tool_calls is not False
    try:
        if prefix:  # tool_choice required or named: the grammar takes over where the written prefix ends
            choice = request.tool_choice
            offered = [f for f in functions if isinstance(choice, str) or f["name"] == choice.function.name]
            return CallConstraint(call_grammar(offered, "required", parallel), written=" " + prefix,
                                  loop_penalty=limits.loop_penalty)
        strict = {tool.function.name for tool in request.tools or [] if tool.function.strict}
        grammar = None
        if limits.constrained_calls == "always" or (limits.constrained_calls == "strict" and strict):
            shown = [f if limits.constrained_calls == "always" or f["name"] in strict
                     else {**f, "parameters": {"type": "object"}} for f in functions]
            grammar = call_grammar(shown, "auto", parallel)
    except Exception:  # noqa: BLE001 - a schema xgrammar cannot turn into a grammar: its calls are still checked
        log.warning("no call grammar for this request's tools; its calls are checked, not constrained", exc_info=True)
        grammar = None
    return CallConstraint(grammar, limits.call_bias, loop_penalty=limits.loop_penalty,
                          majority=limits.majority_decisions) or None


class ChatCompletions:
    """One chat request: its prompt, generation (with one retry of an unusable call), and its reply,
    whole (``full``) or streamed (``stream``)."""

    def __init__(self, request: ChatRequest, engine: EngineClient, limits: Limits, model_name: str,
                 functions: list[dict[str, Any]]) -> None:
        """``functions``: the request's tools checked (``protocol.request_functions``). The route
        builds the handler off the event loop (schemas, grammar and prompt cost CPU time)."""
        self.request, self.engine, self.limits, self.model_name = request, engine, limits, model_name
        self.ident, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        self.functions = functions
        self.schemas = {f["name"]: f for f in self.functions}
        choice = request.tool_choice
        if not self.functions and choice not in (None, "none", "auto"):
            raise RequestError("tool_choice asks for a call but the request has no tools", param="tool_choice")
        self.calls_allowed = bool(self.functions) and choice != "none"
        self.prefix = forced_prefix(choice, [f["name"] for f in self.functions]) if self.calls_allowed else ""
        self.constraint = call_constraint(request, self.functions, self.prefix, limits) if self.calls_allowed else None
        self.turns = request_turns(request)
        self.system = build_system_prompt(self.functions if self.calls_allowed else [])
        self.prompt_tokens = self.completion_tokens = 0
        # The turn policy (fcmistral/turns.py) decides every generation; its first is this request's own.
        self._policy = assistant_turns(self.system, self.turns, SERVER_POLICY, self.schemas, self.calls_allowed,
                                       self.prefix)
        self.generation = self._request(next(self._policy))

    def _request(self, ask: Ask) -> GenerationRequest:
        """The engine's request for one of the policy's asks (a peek: a few greedy tokens, under the
        reply's ``peek_of``: majority decisions, or nothing)."""
        if ask.peek:
            return GenerationRequest(ask.prompt, ask.max_new_tokens,
                                     constraint=peek_constraint(self.constraint))
        prompt_ids = check_prompt(ask.prompt, self.engine, self.limits)
        generation = sampling(self.request, self.limits, ask.prompt, prompt_ids,
                              () if self.calls_allowed else (FUNCTION_CALL_MARKER,))
        generation.constraint = self.constraint
        return generation

    async def _answer(self, ask: Ask) -> tuple[str, str]:
        """One of the policy's later asks, within what is left of the request's budget: all its
        generations together (reply, retry, peek, second turn) make at most WORK_BUDGET times its
        ``max_tokens``. Past that an ask is answered as cut short, so the policy stops there."""
        remaining = WORK_BUDGET * self.generation.max_new_tokens - self.completion_tokens
        if remaining <= 0:
            return "", "length"
        generation = self._request(ask)
        generation.max_new_tokens = min(generation.max_new_tokens or remaining, remaining)
        return self._count(await self.engine.generate(generation))

    def _count(self, update: Update) -> tuple[str, str]:
        checked(update)
        self.prompt_tokens += update.prompt_tokens
        self.completion_tokens += update.completion_tokens
        return update.text, update.finish_reason

    async def finish(self, text: str, last: Update) -> CheckedReply:
        """The checked reply, from the text of the first generation (already done, streamed or
        not): the policy asks for what else it needs (a retry, a peek, a second turn)."""
        reply = (text, self._count(last)[1])  # the first generation's text, streamed or not
        try:
            while True:
                reply = await self._answer(self._policy.send(reply))
        except StopIteration as done:
            outcome: Outcome = done.value
        parts = [t.content if t.role == "assistant" else t.content[: t.content.find(FUNCTION_CALL_MARKER)].strip()
                 for t in outcome.turns]
        return self._reply("\n\n".join(p for p in parts if p) or None, outcome.calls, outcome.finish_reason)

    def _reply(self, content: str | None, calls: list[FunctionCall], finish: str) -> CheckedReply:
        return CheckedReply(content, calls, finish, self.prompt_tokens, self.completion_tokens)

    async def full(self) -> ChatCompletion:
        """The whole reply (the engine wakes this request once, when it is done)."""
        update = await self.engine.generate(self.generation)
        reply = await self.finish(update.text, update)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in tool_call_dicts(reply.calls)]
        return ChatCompletion(id=self.ident, object="chat.completion", created=self.created, model=self.model_name,
                              choices=[{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                              usage=usage(reply))

    async def stream(self) -> AsyncIterator[str]:
        """The reply as server-sent events: text deltas as they come, each call once complete and
        checked (its name, then fragments of its arguments), the finish reason, usage if asked."""
        options = self.request.stream_options
        yield self._chunk({"role": "assistant", "content": ""})
        # Text before a call marker, without the reply's leading and trailing spaces, so that the chunks
        # add up to the non-streamed content (a reply that may not call was stopped at the marker).
        text, collected, last = ReplyStream((FUNCTION_CALL_MARKER,), strip=True), "", None
        async for update in self.engine.stream(self.generation):
            collected, last = collected + update.text, update
            if self.prefix or update.finish_reason:  # a forced call is not text; the end is sent checked
                continue
            new = text.feed(collected)
            if new:
                yield self._chunk({"content": new})
        reply = await self.finish(collected, last)
        rest = (reply.content or "")[text.released:]
        if rest:
            yield self._chunk({"content": rest})
        for call in tool_call_dicts(reply.calls):
            arguments = call["function"]["arguments"]
            yield self._chunk({"tool_calls": [{**call, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            step = max(1, -(-len(arguments) // ARGUMENT_FRAGMENTS))
            for start in range(0, len(arguments), step):
                piece = arguments[start:start + step]
                yield self._chunk({"tool_calls": [{"index": call["index"], "function": {"arguments": piece}}]})
        yield self._chunk({}, reply.finish_reason)
        if options and options.include_usage:
            yield dump(ChatCompletionChunk(id=self.ident, object="chat.completion.chunk", created=self.created,
                                           model=self.model_name, choices=[], usage=usage(reply)))
        yield "[DONE]"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return dump(ChatCompletionChunk(id=self.ident, object="chat.completion.chunk", created=self.created,
                                        model=self.model_name, choices=[{"index": 0, "delta": delta,
                                                                         "finish_reason": finish}]))
