"""Evaluation items: a prompt (system + turns) and the gold call, from each supported data shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from fcmistral.glaive import RowParseError, parse_row
from fcmistral.prompt import FunctionCall, Turn, generation_prompt


@dataclass
class EvalItem:
    query_id: str
    query: str
    system: str
    turns: list[Turn]
    gold: FunctionCall

    @property
    def prompt(self) -> str:
        return generation_prompt(self.system, self.turns)


def glaive_items(rows: Iterable[dict[str, Any]]) -> tuple[list[EvalItem], list[tuple[int, str]]]:
    """Held-out glaive rows: the gold is the first function call, the prompt all turns before it.

    Rows with no call (chit-chat, refusals) have nothing to score and are reported as skipped.
    """
    items, skipped = [], []
    for index, row in enumerate(rows):
        try:
            parsed = parse_row(row)
        except RowParseError as err:
            skipped.append((index, f"unparseable: {err}"))
            continue
        first = next((i for i, t in enumerate(parsed.turns) if t.role == "function_call"), None)
        if first is None:
            skipped.append((index, "no function call"))
            continue
        turns = parsed.turns[:first]
        query = next((t.content for t in reversed(turns) if t.role == "user"), "")
        items.append(EvalItem(str(index), query, parsed.system, turns, parsed.turns[first].call))
    return items, skipped
