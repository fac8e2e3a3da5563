"""A generated function of the demo data: its schema, how a request names each argument, its result
and the assistant's answer (fcmistral.demo.wide_data's bookable kinds, fcmistral.demo.general_functions,
fcmistral.demo.formula_functions), and the number samplers and value writing those modules share."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from fcmistral.demo.sample_data import _schema


def as_written(value: float) -> float | int:
    """A ``number`` argument as the request writes it: 5, not 5.0 (a first run of row i, whose whole
    amounts were written 5.0, wrote 20.0 for integer parameters too)."""
    return int(value) if value == int(value) else value


def number(low: float, high: float, places: int = 1) -> Callable[[random.Random], float | int]:
    """A sampler of numbers in [low, high] to ``places`` decimals, as written."""
    return lambda r: as_written(round(r.uniform(low, high), places))


def numbers(n: tuple[int, int], low: float, high: float, places: int = 1) -> Callable[[random.Random], list]:
    """A sampler of lists of ``n`` (a range) such numbers."""
    return lambda r: [as_written(round(r.uniform(low, high), places)) for _ in range(r.randint(*n))]


def written(value: Any) -> str:
    """A value as a request writes it: a number as the call's JSON writes it (5, 0.25, 5.97e+24), so
    that it is copied, not converted; a list as "a, b and c"."""
    if isinstance(value, list):
        words = [written(v) for v in value]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return repr(value) if isinstance(value, float) else str(value)


# An argument: (name, JSON Schema, required, value sampler, phrase naming the value in a request).
Argument = tuple[str, dict[str, Any], bool, Callable[[random.Random], Any], Callable[[Any], str]]


@dataclass(frozen=True)
class Operation:
    """A function: its name and description, its arguments, how a
    request opens, and the function's result and the assistant's answer for given arguments."""

    name: str
    description: str
    arguments: list[Argument]
    openings: tuple[str, ...]
    result: Callable[[dict[str, Any], random.Random], dict[str, Any]]
    answer: Callable[[dict[str, Any], dict[str, Any]], str]

    @property
    def schema(self) -> dict[str, Any]:
        return _schema(self.name, self.description, {a[0]: a[1] for a in self.arguments},
                       [a[0] for a in self.arguments if a[2]])
