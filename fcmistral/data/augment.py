"""Function-calling augmentation of glaive rows, so a model learns to read schemas and to decline.

Two of Hammer's recipes (Lin et al., 2024), which no training framework ships:
- **irrelevance**: the called function is removed from the SYSTEM prompt (the no-functions header if it
  was the only one), the call turn becomes a refusal naming what is missing, in glaive's own style, and
  the turns that depended on the call are dropped. glaive v2's refusals all decline other requests
  than the offered functions; these teach the case BFCL's irrelevance category asks: a request the
  offered functions *almost* fit. With **stand-ins**, a row whose only function was the called one is
  offered another row's function instead of none: BFCL's irrelevance questions always offer one, and a
  row left without functions teaches only what the no-functions rows teach already (29% of the
  declines drawn on the wide data, docs/training.md row h).
- **renaming**: functions and their parameters renamed to random identifiers, consistently in the
  schemas and the calls (descriptions kept), so the model must read the schema rather than recall a
  name; and **shuffling** the order of the offered functions.
And one of our own, as glaive v2 has one call per turn: **parallel** rows, two requests in one user
message (the row's and a partner row's), both rows' functions offered, both calls in one assistant
turn (prompt.py's parallel convention), both results, then both answers. Half of them take a partner
that calls the same function (where the other rows have one): users ask for one function several
times ("the weather in Paris and in Rome") as often as for two, and with 200 functions a partner
drawn at random almost never calls the same one, so without this the model would only see the second
shape. Where partners call that function with one argument's value changed and the row's request
names its value, the request lists the values in one sentence ("the weather in Paris and Rome": two
or three calls), the shape of BFCL's parallel questions; two requests joined read differently, and a
model trained on them alone wrote one call for such a sentence (docs/training.md, row d).
Each row draws from its own generator, seeded by the run's seed, the epoch (fcmistral/data/epochs.py:
each epoch its own draw) and the row's index, each augmentation independently at its rate: the same
options give the same rows (and the same ``datasets`` cache entry), whichever order they come in.
"""

from __future__ import annotations

import json
import random
import re
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

PARTNER_TRIES = 8  # other rows tried for a partner or a stand-in before a row stays as it is


@dataclass(frozen=True)
class Augmentation:
    """How often each augmentation applies to a training row (0: never)."""

    irrelevance_rate: float = 0.0
    rename_rate: float = 0.0
    shuffle_functions: bool = False
    parallel_rate: float = 0.0
    irrelevance_stand_in: bool = False

    def __bool__(self) -> bool:
        return bool(self.irrelevance_rate or self.rename_rate or self.shuffle_functions or self.parallel_rate)

    @classmethod
    def of(cls, options: Any) -> Augmentation:
        """The augmentation a script's options ask for (DataArguments' fields of the same names)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})


# First words of a description that names a result ("The area of a rectangle", "How long ...") rather than
# an action ("Calculate the area ..."): a refusal then says it can't *tell you* that result, since "I can't
# the area of a rectangle" is what the model would learn to write.
RESULT_OPENINGS = frozenset({"the", "a", "an", "this", "these", "how", "what", "which", "whether", "when", "where",
                             "who", "why"})


def _task(description: str, name: str) -> str:
    """What a function does, as a refusal names it: its description, lower-cased, without the period, as
    an action (a description that names a result is told)."""
    description = description.strip().rstrip(".")
    if not description:
        return f"use {name}"
    task = description[0].lower() + description[1:]
    return f"tell you {task}" if task.split()[0] in RESULT_OPENINGS else task


def refusal(description: str, name: str, rng: random.Random) -> str:
    """A refusal in one of glaive's phrasings, naming what the function ``name`` described by
    ``description`` does (one draw from ``rng``)."""
    return rng.choice(REFUSALS).format(task=_task(description, name))


def without_called_function(row: GlaiveRow, rng: random.Random,
                            stand_ins: list[dict[str, Any]] = ()) -> GlaiveRow | None:
    """The row up to its first call, with the called functions no longer offered and a refusal instead
    of the call; None when the row makes no call. Where no function would be left and ``stand_ins``
    (other rows) are given, one of their functions is offered in the removed one's place."""
    index = next((i for i, turn in enumerate(row.turns) if turn.role == "function_call"), None)
    if index is None:
        return None
    called = {call.name for call in row.turns[index].calls}
    first = row.turns[index].calls[0].name
    removed = next((f for f in row.functions if f.get("name") == first), {"name": first})
    declined = Turn("assistant", refusal(str(removed.get("description") or ""), first, rng))
    functions = [f for f in row.functions if f.get("name") not in called]
    if not functions and stand_ins and (stand_in := _stand_in(called, removed, stand_ins, rng)):
        functions = [stand_in]
    kept = row.turns[:index]
    while kept and kept[-1].is_assistant:  # "Let me check that for you." belongs to the call
        kept = kept[:-1]
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=kept + [declined])


def _stand_in(called: set[str], removed: dict[str, Any], rows: list[dict[str, Any]],
              rng: random.Random) -> dict[str, Any] | None:
    """A function another row offers that cannot serve the declined request: neither a called name nor
    the removed function's description (glaive has near-copies under other names); None when
    PARTNER_TRIES rows offer none."""
    for _ in range(PARTNER_TRIES):
        other = _parsed(rng.choice(rows))
        offered = [f for f in other.functions if f.get("name") not in called
                   and f.get("description") != removed.get("description")] if other else []
        if offered:
            return rng.choice(offered)
    return None


# How the two requests of a parallel row are asked in one user message ({b_}: the second request with
# a lower-case first letter, where it continues the sentence).
JOINS = ("{a} Also, {b_}", "{a}\n{b}", "{a} And one more thing: {b}", "Two things. {a} And {b_}", "{a} Then {b_}")
SAME_FUNCTION_SHARE = 0.5  # joined parallel rows whose partner calls the row's own function (module docstring)


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


# How a request lists the values it asks one function for, two or three.
LISTS = {2: ("{0} and {1}", "{0} as well as {1}", "both {0} and {1}"), 3: ("{0}, {1} and {2}", "{0}, {1}, and {2}")}
QUOTES = "\"'“”‘’"


def _occurrences(text: str, value: Any) -> list[re.Match]:
    """Where ``text`` names ``value`` (a string or a number, written as a call would write it) as a whole word."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        return []
    return list(re.finditer(rf"(?<![\w.-]){re.escape(str(value))}(?!\w|\.\d)", text))


def _ends_a_sentence(value: Any) -> bool:
    """A sentence ("saying: See you at 3."): unquoted, a list of them would not read."""
    return str(value)[-1:] in (".", "!", "?")


def _mention(text: str, value: Any) -> tuple[int, int] | None:
    """Where ``text`` names ``value``, quotes around it included; None unless it does so exactly once, as
    a whole word, and quoted if it ends a sentence."""
    found = _occurrences(text, value)
    if len(found) != 1:
        return None
    start, end = found[0].span()
    if 0 < start and end < len(text) and text[start - 1] in QUOTES and text[end] in QUOTES:
        return start - 1, end + 1
    return None if _ends_a_sentence(value) else (start, end)


def with_listed_values(row: GlaiveRow, partners: list[GlaiveRow], rng: random.Random) -> GlaiveRow | None:
    """The row's request asking for two or three values of one argument in one sentence ("the weather in
    Paris and Rome"), answered by one call per value in one turn, a result per call and the answers.
    The other values come from ``partners`` whose single call is the row's with that one argument
    changed (so their results and answers are theirs); None when there are none, or when the request
    does not name its value once."""
    ours = _single_exchange(row)
    if ours is None:
        return None
    context, request, call, result, answer = ours
    (first,) = call.calls
    schema = next((f for f in row.functions if f.get("name") == first.name), None)
    wanted = rng.choice((2, 2, 3))
    # The argument that changes, where the request names it and whether in quotes; (value, exchange) per partner
    key, span, quoted, found = None, (0, 0), False, []
    for partner in rng.sample(partners, len(partners)):
        theirs = _single_exchange(partner)
        if theirs is None or schema not in partner.functions:
            continue
        (other,) = theirs[2].calls
        if other.name != first.name or other.arguments.keys() != first.arguments.keys():
            continue
        changed = [k for k in first.arguments if other.arguments[k] != first.arguments[k]]
        if len(changed) != 1 or key not in (None, changed[0]):
            continue
        value = other.arguments[changed[0]]
        if type(value) is not type(first.arguments[changed[0]]) or any(value == v for v, _ in found):
            continue
        if key is None:
            if (span := _mention(request.content, first.arguments[changed[0]])) is None:
                continue
            key, quoted = changed[0], request.content[span[0]] in QUOTES
        if str(value).strip() and not _occurrences(request.content, value) and (quoted or not _ends_a_sentence(value)):
            found.append((value, theirs))
        if len(found) == wanted - 1:
            break
    if not found:
        return None
    start, end = span
    named = request.content[start:end]
    quote = (named[0], named[-1]) if quoted else ("", "")
    values = [named] + [f"{quote[0]}{value}{quote[1]}" for value, _ in found]
    asked = request.content[:start] + rng.choice(LISTS[len(values)]).format(*values) + request.content[end:]
    calls = [first] + [theirs[2].calls[0] for _, theirs in found]
    turns = [*context, Turn("user", asked), call_turn(calls), result, *(theirs[3] for _, theirs in found),
             Turn("assistant", " ".join([answer.content] + [theirs[4].content for _, theirs in found]))]
    return replace(row, turns=turns)


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


def _same_function_partners(row: GlaiveRow, partners: list[dict[str, Any]]) -> list[GlaiveRow]:
    """The partner rows, parsed, whose first call is one call of the function the row's first call calls."""
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
                found.append(parsed)
    return found


def _with_partner(row: GlaiveRow, same: list[GlaiveRow], partners: list[dict[str, Any]],
                  rng: random.Random) -> GlaiveRow:
    """The row as a parallel row: its values listed in one sentence where rows of ``same`` (calling its
    function) allow, else its request joined with a partner's (one of ``same`` half the time, where
    there are any, else one of ``partners``); the row unchanged when no partner tried fits."""
    if same and (listed := with_listed_values(row, same, rng)):
        return listed
    same = same if rng.random() < SAME_FUNCTION_SHARE else []
    for _ in range(PARTNER_TRIES):
        partner = rng.choice(same) if same else _parsed(rng.choice(partners))
        if partner is not None and (paired := with_parallel_calls(row, partner, rng)):
            return paired
    return row


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
        parsed = _with_partner(parsed, _same_function_partners(parsed, partners), partners, rng)
    stand_ins = partners if augmentation.irrelevance_stand_in else ()
    if irrelevance and (declined := without_called_function(parsed, rng, stand_ins)):
        parsed = declined
    if rename:
        parsed = renamed(parsed, rng)
    if augmentation.shuffle_functions and len(parsed.functions) > 1:
        parsed = shuffled(parsed, rng)
    return {**row, "system": parsed.system, "chat": parsed.chat}
