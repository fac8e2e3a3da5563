"""The turn policy, free of I/O: what the assistant's side of a conversation asks the model for, and
when it stops. The terminal chat, ``--prompt``, the server and evaluation all run it; each answers
its asks its own way (a blocking call, the batching engine, batches of items), so the rules live
once, here.

The rules, where the glaive format decides them:
- The assistant may write several turns in a row (glaive's "Sure, let me check." then the call):
  after a text turn, the model is asked for a few tokens past it (a *peek*), and another assistant
  turn follows when it writes the ``ASSISTANT`` tag next; at most ``max_assistant_turns`` in a row.
- A turn holding the call marker is a call turn; one cut short by the length limit is text.
- Where the caller checks calls here (``schemas`` given: the server, which must never return an
  unusable call), a call that cannot be read or fails its schema is shown its error as a FUNCTION
  RESPONSE and the model is asked again, up to ``call_retries`` times; then the reply is text. The
  terminal chat checks calls when it runs them (``format.checks`` there too), and the model reads
  the error in the conversation.
- A reply forced to start with a call (``prefix``, from ``tool_choice``), or one that may not call, is
  one turn: no peek.

``assistant_turns`` is a generator: it yields an ``Ask`` and is sent back ``(text, finish_reason)``;
its return value is the ``Outcome``. ``run_turns`` drives it with a blocking function.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Mapping, Protocol

from fcmistral.format.calls import try_parse_calls
from fcmistral.format.checks import check_calls
from fcmistral.prompt import (
    ASSISTANT_TAG,
    FUNCTION_CALL_MARKER,
    FunctionCall,
    Turn,
    generation_prompt,
    turn_continuation_prompt,
)

if TYPE_CHECKING:  # (a type only: the constraint module loads torch and transformers)
    from fcmistral.constraint import CallConstraint

log = logging.getLogger(__name__)
PEEK_TOKENS = 8  # enough for "\n\n\nASSISTANT" in any tokenizer (7 tokens in Mistral's)


@dataclass(frozen=True)
class TurnPolicy:
    """How many assistant turns in a row, and how many times an unusable call is asked again."""

    max_assistant_turns: int = 3
    call_retries: int = 0


CHAT_POLICY = TurnPolicy(max_assistant_turns=3, call_retries=0)  # calls are checked when they run
SERVER_POLICY = TurnPolicy(max_assistant_turns=2, call_retries=1)  # text then a call; one retry


@dataclass(frozen=True)
class Ask:
    """A generation the policy needs: continue ``prompt``, for at most ``max_new_tokens`` (None:
    the caller's own limit). ``peek``: only the role tag after a finished turn is wanted."""

    prompt: str
    max_new_tokens: int | None = None
    peek: bool = False


@dataclass
class Outcome:
    """The assistant's new turns (text turns, then a call turn if it called) and why the reply
    ended: "stop", "length" or "tool_calls"."""

    turns: list[Turn]
    finish_reason: str

    @property
    def calls(self) -> list[FunctionCall]:
        """The calls of the closing call turn (checked when ``schemas`` were given), else none."""
        return self.turns[-1].calls if self.finish_reason == "tool_calls" else []


Generated = tuple[str, str]  # (text, finish reason) of one generation


def starts_assistant_turn(peek: str) -> bool:
    """Whether the text the model writes after a finished turn starts another assistant turn: its
    first word is the ASSISTANT tag or, if the peek was cut short, a start of it (no other role
    tag starts with the same letter)."""
    word = peek.lstrip()[: len(ASSISTANT_TAG)]
    return bool(word) and ASSISTANT_TAG.startswith(word)


def assistant_turns(system: str, turns: list[Turn], policy: TurnPolicy = CHAT_POLICY,
                    schemas: Mapping[str, dict[str, Any]] | None = None, calls_allowed: bool = True,
                    prefix: str = "") -> Generator[Ask, Generated, Outcome]:
    """The assistant's turns after ``turns`` (see the module docstring)."""
    new: list[Turn] = []
    finish = "stop"
    for count in range(1, policy.max_assistant_turns + 1):
        context = turns + new
        text, finish = yield Ask(_prompt(system, context, prefix))
        turn, finish = yield from _checked(system, context, prefix + text, finish, policy, schemas,
                                                  calls_allowed, prefix)
        new.append(turn)
        if turn.role == "function_call" or finish != "stop" or prefix or not calls_allowed or not turn.content:
            break
        if count == policy.max_assistant_turns:
            break
        peek, _ = yield Ask(turn_continuation_prompt(system, turns + new), PEEK_TOKENS, peek=True)
        if not starts_assistant_turn(peek):
            break
    return Outcome(new, "tool_calls" if new[-1].role == "function_call" else finish)


def _prompt(system: str, turns: list[Turn], prefix: str) -> str:
    return generation_prompt(system, turns) + (" " + prefix if prefix else "")


def _checked(system: str, context: list[Turn], text: str, finish: str, policy: TurnPolicy,
             schemas: Mapping[str, dict[str, Any]] | None, calls_allowed: bool,
             prefix: str) -> Generator[Ask, Generated, tuple[Turn, str]]:
    """One turn as text or a call; with ``schemas``, an unusable call is asked again, then text."""
    text = text.strip()
    marker = text.find(FUNCTION_CALL_MARKER) if calls_allowed else -1
    if marker < 0 or finish == "length":  # text, or a call cut short: text
        return Turn("assistant", text), finish
    if schemas is None:  # checked where it runs
        return Turn("function_call", text, try_parse_calls(text)[0]), "tool_calls"
    calls, problem = check_calls(text, schemas)
    retries = policy.call_retries
    while problem and retries:
        retries -= 1
        log.info("a reply's call is unusable, asking once more: %s", problem)
        told = [*context, Turn("function_call", text[marker:]),
                Turn("function_response", json.dumps({"error": problem}))]
        retry, retry_finish = yield Ask(_prompt(system, told, prefix))
        if retry_finish == "length":  # the retry's call cut short: the first reply stands, as text
            break
        calls, problem = check_calls(prefix + retry, schemas)
    if problem:
        log.info("the call stays unusable, returned as text: %s", problem)
        return Turn("assistant", text), "stop"
    return Turn("function_call", text, calls), "tool_calls"


def run_turns(policy: Generator[Ask, Generated, Outcome], answer: Callable[[Ask], Generated]) -> Outcome:
    """Drive ``policy`` with a blocking ``answer``."""
    try:
        ask = next(policy)
        while True:
            ask = policy.send(answer(ask))
    except StopIteration as done:
        return done.value


def run_turns_together(policies: list[Generator[Ask, Generated, Outcome]],
                       answer: Callable[[list[tuple[int, Ask]]], list[Generated]]) -> list[Outcome]:
    """Drive several policies in lockstep with a batched ``answer`` (evaluation's batches): each
    round, the asks of the policies still running are answered together, each with its policy's
    index."""
    asks = {i: next(policy) for i, policy in enumerate(policies)}  # a policy always asks once at least
    outcomes: dict[int, Outcome] = {}
    while asks:
        pending = list(asks)
        for i, generated in zip(pending, answer([(i, asks[i]) for i in pending])):
            try:
                asks[i] = policies[i].send(generated)
            except StopIteration as done:
                outcomes[i] = done.value
                del asks[i]
    return [outcomes[i] for i in range(len(policies))]


class Conversation(Protocol):
    """A conversation the assistant answers next (an evaluation item, a training probe); ``prompt``:
    its generation prompt, to batch conversations of similar length."""

    system: str
    turns: list[Turn]

    @property
    def prompt(self) -> str: ...


Generate = Callable[[list[str], list["CallConstraint | None"], int | None], list[str]]
"""Replies to prompts (cut at the end marker), each under its call constraint (or None), with a token
limit (None: the generator's own)."""


def peek_constraint(constraint: "CallConstraint | None") -> "CallConstraint | None":
    """The constraint of a peek after a text turn generated under ``constraint`` (its ``peek_of``), or
    none; written here, not in fcmistral.constraint, as this module may not import torch."""
    return constraint.peek_of() if constraint is not None else None


def replies(generate: Generate, conversations: list[Conversation],
            constraints: list[CallConstraint | None] | None = None) -> list[str]:
    """Each conversation's reply as the terminal chat runs it, conversations in batches (evaluation,
    the training's call metric): the assistant's turns under the chat's policy, so a model that
    writes "Sure, let me check." and then the call in a second turn is scored on its call, as a user
    of the chat or the server would get it. The turns are joined by a blank line. ``constraints``:
    one per conversation; its peeks get its ``peek_of`` (majority decisions) or none. Every generation
    counts as stopped, as in the chat (the generators return text without a finish reason): a call cut
    short is scored as unreadable."""
    constraints = constraints or [None] * len(conversations)

    def answer(asks: list[tuple[int, Ask]]) -> list[Generated]:
        texts: dict[int, str] = {}
        for limit in dict.fromkeys(ask.max_new_tokens for _, ask in asks):  # the replies, the peeks
            group = [(i, ask) for i, ask in asks if ask.max_new_tokens == limit]
            outputs = generate([ask.prompt for _, ask in group],
                               [peek_constraint(constraints[i]) if ask.peek else constraints[i] for i, ask in group], limit)
            texts.update((i, text) for (i, _), text in zip(group, outputs))
        return [(texts[i], "stop") for i, _ in asks]

    outcomes = run_turns_together([assistant_turns(c.system, c.turns, CHAT_POLICY) for c in conversations], answer)
    return ["\n\n".join(turn.content for turn in outcome.turns) for outcome in outcomes]
