"""The terminal chat's function-calling loop: the model writes (the turn policy of ``fcmistral/turns.py``),
calls are checked and run, their results go back to it.

The model is reached only through a ``Complete`` callable (prompt in, text out), so the same loop
serves the terminal, ``--prompt`` and tests that script the model's replies.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Protocol

from fcmistral.format.calls import try_parse_calls
from fcmistral.format.checks import call_problem
from fcmistral.prompt import FunctionCall, Turn, build_system_prompt
from fcmistral.turns import CHAT_POLICY, Ask, assistant_turns, run_turns


class Complete(Protocol):
    def __call__(self, prompt: str, max_new_tokens: int | None = None, stream: bool = False,
                 guided: bool = True) -> str:
        """The model's continuation of ``prompt``, cut before ``<|endoftext|>``; ``guided``: under
        the completer's call constraint, if it has one; a peek past a turn is not, only under its
        ``peek_of`` (majority decisions, if the constraint has them)."""


def assistant_step(complete: Complete, system: str, turns: list[Turn], stream: bool = False) -> list[Turn]:
    """The assistant's turns until it calls a function or hands the conversation back (the turn
    policy of ``fcmistral/turns.py``; peeks are never streamed)."""
    def answer(ask: Ask) -> tuple[str, str]:
        return complete(ask.prompt, max_new_tokens=ask.max_new_tokens, stream=stream and not ask.peek,
                        guided=not ask.peek), "stop"

    return run_turns(assistant_turns(system, turns, CHAT_POLICY), answer).turns


class ToolTimeout(Exception):
    """A function call ran past its time limit."""


def call_with_time_limit(function: Callable[..., Any], arguments: dict[str, Any], seconds: float) -> Any:
    """``function(**arguments)``, or ToolTimeout after ``seconds``.

    Run in a daemon thread: Python cannot stop a thread, so a function that hangs keeps running in
    the background, but the chat goes on and the process can still exit (a thread pool's workers
    would block the exit).
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = function(**arguments)
        except BaseException as err:  # handed to the caller's thread, which reports it
            outcome["error"] = err

    worker = threading.Thread(target=run, name=f"tool-{getattr(function, '__name__', 'call')}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise ToolTimeout(f"no result after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def result_json(name: str, result: Any) -> str:
    """A function's result as FUNCTION RESPONSE JSON; a result JSON cannot carry (a circular
    structure, NaN or Infinity, an object whose ``str()`` fails) becomes an error for the model.
    Other objects (dates, decimals...) are sent as their ``str()``."""
    try:
        return json.dumps(result if isinstance(result, dict) else {"result": result}, ensure_ascii=False,
                          allow_nan=False, default=str)
    except Exception as err:  # ValueError, RecursionError, or whatever a user's __str__ raises
        return json.dumps({"error": f"the result of {name} cannot be sent as JSON: {type(err).__name__}: {err}"})


def execute_calls(turn: Turn, schemas: dict[str, dict[str, Any]], callables: dict[str, Callable[..., Any]],
                  time_limit: float = 30.0) -> list[str]:
    """Run a call turn's functions, in order, and return one FUNCTION RESPONSE text (JSON) per call
    (the parallel-calls convention of ``fcmistral.prompt``).

    Only registered functions run, with the parsed arguments as keyword values; model output is
    never evaluated as code. Every failure (bad call, exception, time limit, a result JSON cannot
    hold) becomes a JSON error object for the model to read; a turn that cannot be read gets one.
    """
    calls, reason = try_parse_calls(turn.content)
    if reason:
        return [json.dumps({"error": f"the function call could not be parsed: {reason}"})]
    runnable = {n: schema for n, schema in schemas.items() if n in callables}
    return [execute_call(call, runnable, callables, time_limit) for call in calls]


def execute_call(call: FunctionCall, schemas: dict[str, dict[str, Any]], callables: dict[str, Callable[..., Any]],
                 time_limit: float) -> str:
    """One checked call run (``schemas``: the functions that may run); its FUNCTION RESPONSE text."""
    name, arguments = call.name, call.arguments
    problem = call_problem(call, schemas)
    if problem:
        return json.dumps({"error": problem}, ensure_ascii=False)
    try:
        result = call_with_time_limit(callables[name], arguments, time_limit)
    except ToolTimeout as err:
        return json.dumps({"error": f"{name} timed out: {err}"})
    except Exception as err:  # the user's function failed: the model is told, the chat goes on
        return json.dumps({"error": f"{name} failed: {type(err).__name__}: {err}"})
    return result_json(name, result)


class ChatSession:
    """A conversation with functions to call: ``send`` a user message, get the new turns back."""

    def __init__(self, complete: Complete, functions: list[dict[str, Any]], callables: dict[str, Callable[..., Any]],
                 max_calls: int = 3, stream: bool = False, tool_time_limit: float = 30.0) -> None:
        self.complete, self.callables, self.max_calls, self.stream = complete, callables, max_calls, stream
        self.tool_time_limit = tool_time_limit
        self.schemas = {f["name"]: f for f in functions}
        self.system = build_system_prompt(functions)
        self.turns: list[Turn] = []

    def reset(self) -> None:
        self.turns = []

    def send(self, message: str, on_turn: Callable[[Turn], None] | None = None) -> list[Turn]:
        start = len(self.turns)
        self._append(Turn("user", message), on_turn)
        for calls in range(self.max_calls + 1):
            step = assistant_step(self.complete, self.system, self.turns, self.stream)
            for turn in step:
                self._append(turn, on_turn)
            if step[-1].role != "function_call" or calls == self.max_calls:
                break
            for response in execute_calls(step[-1], self.schemas, self.callables, self.tool_time_limit):
                self._append(Turn("function_response", response), on_turn)
        return self.turns[start:]

    def _append(self, turn: Turn, on_turn: Callable[[Turn], None] | None) -> None:
        self.turns.append(turn)
        if on_turn is not None:
            on_turn(turn)
