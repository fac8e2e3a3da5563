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
Each row draws from its own generator, seeded by the run's seed and the row's index: the same
options give the same rows (and the same ``datasets`` cache entry), whichever order they come in.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, fields, replace
from typing import Any

from fcmistral.format.glaive import GlaiveRow, parse_row
from fcmistral.prompt import Turn, build_system_prompt, call_turn

# Glaive's own refusal style ("I'm sorry, but I can't order a pizza. My capabilities are limited to the
# functions provided to me."), naming the task from the removed function's description.
REFUSALS = (
    "I'm sorry, but I can't {task}. My capabilities are limited to the functions provided to me.",
    "I'm sorry, but I am unable to {task} as I don't have a function for that.",
    "Unfortunately, none of the functions available to me can {task}. Is there anything else I can help with?",
    "I'm afraid I can't help with that: I have no function to {task}.",
)


@dataclass(frozen=True)
class Augmentation:
    """How often each augmentation applies to a training row (0: never)."""

    irrelevance_rate: float = 0.0
    rename_rate: float = 0.0
    shuffle_functions: bool = False

    def __bool__(self) -> bool:
        return bool(self.irrelevance_rate or self.rename_rate or self.shuffle_functions)

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
    """The row up to its first call, with the called function no longer offered and a refusal instead
    of the call; None when the row makes no call."""
    index = next((i for i, turn in enumerate(row.turns) if turn.role == "function_call"), None)
    if index is None:
        return None
    called = row.turns[index].call.name
    removed = next((f for f in row.functions if f.get("name") == called), {"name": called})
    functions = [f for f in row.functions if f.get("name") != called]
    kept = row.turns[:index]
    while kept and kept[-1].is_assistant:  # "Let me check that for you." belongs to the call
        kept = kept[:-1]
    refusal = Turn("assistant", rng.choice(REFUSALS).format(task=_task(removed)))
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=kept + [refusal])


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
        if turn.role == "function_call" and turn.call.name in names:
            mapping = parameters.get(turn.call.name, {})
            turn = call_turn(names[turn.call.name], {mapping.get(k, k): v for k, v in turn.call.arguments.items()})
        turns.append(turn)
    return replace(row, system=build_system_prompt(functions), functions=functions, turns=turns)


def shuffled(row: GlaiveRow, rng: random.Random) -> GlaiveRow:
    functions = rng.sample(row.functions, len(row.functions))
    return replace(row, system=build_system_prompt(functions), functions=functions)


def augment_row(row: dict[str, Any], index: int, augmentation: Augmentation, seed: int) -> dict[str, Any]:
    """One ``{system, chat}`` row, augmented as ``augmentation`` draws for it (its own generator)."""
    if not augmentation or not isinstance(row.get("system"), str) or not isinstance(row.get("chat"), str):
        return row
    try:
        parsed = parse_row(row)
    except ValueError:  # left as it is: tokenization skips and reports it like any bad row
        return row
    rng = random.Random(f"{seed}:{index}")
    if rng.random() < augmentation.irrelevance_rate and (declined := without_called_function(parsed, rng)):
        parsed = declined
    elif rng.random() < augmentation.rename_rate:
        parsed = renamed(parsed, rng)
    if augmentation.shuffle_functions and len(parsed.functions) > 1:
        parsed = shuffled(parsed, rng)
    return {**row, "system": parsed.system, "chat": parsed.chat}
