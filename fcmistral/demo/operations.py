"""A generated function of the demo data: its schema, how a request names each argument, its result
and the assistant's answer (fcmistral.demo.wide_data's bookable kinds, fcmistral.demo.general_functions)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from fcmistral.demo.sample_data import _schema

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
