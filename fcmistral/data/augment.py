"""Function-calling augmentation of glaive rows, so a model learns to read schemas and to decline.

Two of Hammer's recipes (Lin et al., 2024), which no training framework ships:
- **irrelevance**: the called function is removed from the SYSTEM prompt (the no-functions header if it
  was the only one), the call turn becomes a refusal naming what is missing, in glaive's own style, and
  the turns that depended on the call are dropped. glaive v2's refusals all decline other requests
  than the offered functions; these teach the case BFCL's irrelevance category asks: a request the
  offered functions *almost* fit.
- **renaming**: functions and their parameters renamed to random identifiers, consistently in the
  schemas and the calls (descriptions kept), so the model must read the schema rather than recall a
  name; and **shuffling** the order of the offered functions.
And one of our own, as glaive v2 has one call per turn: **parallel** rows, two requests in one user
message (the row's and a partner row's), both rows' functions offered, both calls in one assistant
turn (prompt.py's parallel convention), both results, then both answers. Half of them take a partner
that calls the same function (where the other rows have one): users ask for one function several
times ("the weather in Paris and in Rome") as often as for two, and with 200 functions a partner
drawn at random almost never calls the same one, so without this the model would only see the second
shape.
Each row draws from its own generator, seeded by the run's seed, the epoch (fcmistral/data/epochs.py:
each epoch its own draw) and the row's index, each augmentation independently at its rate: the same
options give the same rows (and the same ``datasets`` cache entry), whichever order they come in.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, fields, replace
from typing import Any

from fcmistral.format.glaive import GlaiveRow, parse_row
from fcmistral.prompt import FunctionCall, Turn, build_system_prompt, call_turn

# Glaive's own refusal style ("I'm sorry, but I can't order a pizza. My capabilities are limited to the
# functions provided to me."), naming the task from the removed function's description.
REFUSALS = (
    "I'm sorry, but I can't {task}. My capabilities are limited to the functions provided to me.",
    "I'm sorry, but I am unable to {task} as I don't have a function for that.",
    "Unfortunately, none of the functions available to me can {task}. Is there anything else I can help with?",
    "I'm afraid I can't help with that: I have no function to {task}.",
    "I'm sorry, but I don't have a function to {task}.",
    "Unfortunately I can't {task}: none of my functions does that. Is there anything else I can help with?",
)


@dataclass(frozen=True)
class Augmentation:
    """How often each augmentation applies to a training row (0: never)."""

    irrelevance_rate: float = 0.0
    rename_rate: float = 0.0
    shuffle_functions: bool = False
    parallel_rate: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.irrelevance_rate or self.rename_rate or self.shuffle_functions or self.parallel_rate)

    @classmethod
    def of(cls, options: Any) -> Augmentation:
        """The augmentation a script's options ask for (DataArguments' fields of the same names)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})


def _task(function: dict[str, Any]) -> str:
    """What a function does, as a refusal names it: its description, lower-cased, without the period."""
    description = str(function.get("description") or "").strip().rstrip(".")
    if not description:
        return f"use {function['name']}"
    return description[0].lower() + description[1:]


def without_called_function(row: GlaiveRow, rng: random.Random) -> GlaiveRow | None:
    """The row up to its first call, with the called functions no longer offered and a refusal instead
    of the call; None when the row makes no call."""
    index = next((i for i, turn in enumerate(row.turns) if turn.role == "function_call"), None)
    if index is None:
        return None
    called = {call.name for call in row.turns[index].calls}
    first = row.turns[index].calls[0].name
    removed = next((f for f in row.functions if f.get("name") == first), {"name": first})
    functions = [f for f in row.functions if f.get("name") not in called]
    kept = row.turns[:index]
    while kept and kept[-1].is_assistant:  # "Let me check that for you." belongs to the call
        kept = kept[:-1]
    refusal = Turn("assistant", rng.choice(REFUSALS).format(task=_task(removed)))
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=kept + [refusal])


# How the two requests of a parallel row are asked in one user message ({b_}: the second request with
# a lower-case first letter, where it continues the sentence).
JOINS = ("{a} Also, {b_}", "{a}\n{b}", "{a} And one more thing: {b}", "Two things. {a} And {b_}", "{a} Then {b_}")
PARTNER_TRIES = 8  # partner rows tried before a row stays single
SAME_FUNCTION_SHARE = 0.5  # parallel rows whose partner calls the row's own function (module docstring)


def _single_exchange(row: GlaiveRow) -> tuple[list[Turn], Turn, Turn, Turn, Turn] | None:
    """(turns before the request, request, call, result, answer) of a row whose first call is
    one call answered by one result and one answer, or None."""
    index = next((i for i, turn in enumerate(row.turns) if turn.role == "function_call"), None)
    if index is None or len(row.turns[index].calls) != 1 or len(row.turns) < index + 3:
        return None
    result, answer = row.turns[index + 1], row.turns[index + 2]
    if result.role != "function_response" or answer.role != "assistant":
        return None
    request = index - 1
    while request >= 0 and row.turns[request].is_assistant:  # "Let me check." belongs to the call
        request -= 1
    if request < 0 or row.turns[request].role != "user":
        return None
    return row.turns[:request], row.turns[request], row.turns[index], result, answer


def join_requests(first: str, second: str, rng: random.Random) -> str:
    """Two requests as one user message (a parallel row's, here and in the demo's wide data)."""
    return rng.choice(JOINS).format(a=first, b=second, b_=second[:1].lower() + second[1:])


def with_parallel_calls(row: GlaiveRow, partner: GlaiveRow, rng: random.Random) -> GlaiveRow | None:
    """The row's request and the partner's in one user message, answered by both calls in one turn,
    both results and both answers; None when either has no single call exchange or their functions
    share a name with different schemas."""
    ours, theirs = _single_exchange(row), _single_exchange(partner)
    if ours is None or theirs is None:
        return None
    offered = {f.get("name"): f for f in row.functions}
    if any(f.get("name") in offered and offered[f.get("name")] != f for f in partner.functions):
        return None
    functions = row.functions + [f for f in partner.functions if f.get("name") not in offered]
    context, request, call, result, answer = ours
    _, their_request, their_call, their_result, their_answer = theirs
    if call.calls == their_call.calls:
        return None
    turns = [*context, Turn("user", join_requests(request.content, their_request.content, rng)),
             call_turn(call.calls + their_call.calls), result, their_result,
             Turn("assistant", f"{answer.content} {their_answer.content}")]
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=turns)


def _identifier(rng: random.Random, taken: set[str]) -> str:
    while (name := rng.choice(string.ascii_lowercase) + "".join(rng.choices(string.ascii_lowercase + "_", k=7))) in taken:
        pass
    taken.add(name)
    return name


def renamed(row: GlaiveRow, rng: random.Random) -> GlaiveRow:
    """Functions and their top-level parameters renamed to random identifiers in the schemas and calls."""
    taken: set[str] = set()
    names = {f["name"]: _identifier(rng, taken) for f in row.functions if "name" in f}
    parameters: dict[str, dict[str, str]] = {}
    functions = []
    for function in row.functions:
        schema = dict(function)
        if "name" in function:
            schema["name"] = names[function["name"]]
        params = function.get("parameters")
        if isinstance(params, dict) and isinstance(params.get("properties"), dict):
            mapping = {key: _identifier(rng, taken) for key in params["properties"]}
            parameters[function.get("name")] = mapping
            schema["parameters"] = {**params, "properties": {mapping[k]: v for k, v in params["properties"].items()}}
            if isinstance(params.get("required"), list):
                schema["parameters"]["required"] = [mapping.get(k, k) for k in params["required"]]
        functions.append(schema)
    turns = []
    for turn in row.turns:
        if turn.role == "function_call" and any(call.name in names for call in turn.calls):
            turn = call_turn([FunctionCall(names.get(call.name, call.name),
                                           {parameters.get(call.name, {}).get(k, k): v for k, v in call.arguments.items()})
                              for call in turn.calls])
        turns.append(turn)
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=turns)


def shuffled(row: GlaiveRow, rng: random.Random) -> GlaiveRow:
    functions = rng.sample(row.functions, len(row.functions))
    return replace(row, system=build_system_prompt(functions), functions=functions)


def _parsed(row: dict[str, Any]) -> GlaiveRow | None:
    if not isinstance(row.get("system"), str) or not isinstance(row.get("chat"), str):
        return None
    try:
        return parse_row(row)
    except ValueError:  # left as it is: tokenization skips and reports it like any bad row
        return None


def _same_function_partners(row: GlaiveRow, partners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The partner rows whose first call is one call of the function the row's first call calls."""
    exchange = _single_exchange(row)
    if exchange is None:
        return []
    name = exchange[2].calls[0].name
    quoted = json.dumps(name)  # a cheap filter on the raw text before parsing the few rows that pass it
    found = []
    for partner in partners:
        if quoted in partner.get("chat", "") and (parsed := _parsed(partner)) is not None:
            theirs = _single_exchange(parsed)
            if theirs is not None and theirs[2].calls[0].name == name:
                found.append(partner)
    return found


def augment_row(row: dict[str, Any], index: int, augmentation: Augmentation, seed: int | str,
                partners: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """One ``{system, chat}`` row, augmented as ``augmentation`` draws for it (its own generator,
    seeded by ``seed``: the run's seed, and the epoch after the first); a parallel row takes its second
    request from one of ``partners`` (other rows of the data)."""
    parsed = _parsed(row) if augmentation else None
    if parsed is None:
        return row
    rng = random.Random(f"{seed}:{index}")
    parallel, irrelevance, rename = (rng.random() < rate for rate in (
        augmentation.parallel_rate, augmentation.irrelevance_rate, augmentation.rename_rate))
    if parallel and partners:
        same = _same_function_partners(parsed, partners) if rng.random() < SAME_FUNCTION_SHARE else []
        for _ in range(PARTNER_TRIES):
            partner = _parsed(rng.choice(same or partners))
            if partner is not None and (paired := with_parallel_calls(parsed, partner, rng)):
                parsed = paired
                break
    if irrelevance and (declined := without_called_function(parsed, rng)):
        parsed = declined
    if rename:
        parsed = renamed(parsed, rng)
    if augmentation.shuffle_functions and len(parsed.functions) > 1:
        parsed = shuffled(parsed, rng)
    return {**row, "system": parsed.system, "chat": parsed.chat}
