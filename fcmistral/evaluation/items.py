"""Evaluation items: a prompt (system + turns) and the gold call, from each supported data shape.

Shapes, told apart by their columns:
- glaive rows ``{system, chat}`` (the held-out sample file): the gold is the first function call;
  a row that offers functions and never calls one (a refusal, an answer from knowledge) is a
  *declining* item: its gold is no call at all, so a model that calls on every request is seen;
- NexusRaven-V2 benchmark sets ``{Input, Output}``: Output is a Python call;
- NexusRaven_API_evaluation ``standardized_queries``: ``prompt``, ``python_function_name``,
  ``python_args_dict`` (a JSON string), ``context_functions``;
- NexusRaven_API_evaluation ``raw_queries``: ``query_dict`` = JSON ``{query, reference}``
  (cve_cpe, emailrep, virustotal) or ``{Input, Output, ...}`` (toolllm), Output a Python call.
The Nexusflow shapes carry no schemas: they come from ``--functions``. A row whose reference
cannot be read is skipped as "unreadable reference"; one of a shape not listed here as
"unsupported shape".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from fcmistral.errors import UserError
from fcmistral.format.glaive import RowParseError, parse_functions, parse_row
from fcmistral.format.pycall import PythonCallError, parse_python_call
from fcmistral.prompt import FunctionCall, Turn, build_system_prompt, generation_prompt


class UnsupportedShape(ValueError):
    """A row whose columns or query_dict keys are none of the shapes this module reads."""


@dataclass
class EvalItem:
    query_id: str
    query: str
    system: str
    turns: list[Turn]
    gold: FunctionCall | None  # None: the right reply makes no call (a declining item)

    @property
    def prompt(self) -> str:
        return generation_prompt(self.system, self.turns)

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """The functions the prompt offers (read back from its system text)."""
        return parse_functions(self.system)

    def record_fields(self) -> dict[str, Any]:
        """What a prediction record keeps besides the output: enough to score it again."""
        gold = {"name": self.gold.name, "arguments": self.gold.arguments} if self.gold else None
        return {"query": self.query, "gold_call": gold}


def glaive_items(rows: Iterable[dict[str, Any]]) -> tuple[list[EvalItem], list[tuple[int, str]]]:
    """Held-out glaive rows: the gold is the first function call, the prompt all turns before it; a
    row that offers functions and never calls one is a declining item, its prompt the turns before
    its first assistant turn. Rows without functions (chit-chat) are reported as skipped.
    """
    items, skipped = [], []
    for index, row in enumerate(rows):
        try:
            parsed = parse_row(row)
        except RowParseError as err:
            skipped.append((index, f"unparseable: {err}"))
            continue
        first = next((i for i, t in enumerate(parsed.turns) if t.role == "function_call"), None)
        if first is None:  # a declining item, up to its first assistant turn
            end, gold = next((i for i, t in enumerate(parsed.turns) if t.is_assistant), 0), None
            if not parsed.functions or not end:
                skipped.append((index, "no function offered" if not parsed.functions else "no assistant turn"))
                continue
        elif len(parsed.turns[first].calls) > 1:  # scored as BFCL scores its parallel categories: not here
            skipped.append((index, "parallel calls"))
            continue
        else:
            end, gold = first, parsed.turns[first].calls[0]
        turns = parsed.turns[:end]
        query = next((t.content for t in reversed(turns) if t.role == "user"), "")
        items.append(EvalItem(str(index), query, parsed.system, turns, gold))
    return items, skipped


def _query_item(index: int, query: str, gold: FunctionCall, functions: list[dict[str, Any]]) -> EvalItem:
    return EvalItem(str(index), query, build_system_prompt(functions), [Turn("user", query)], gold)


def _nexus_row(row: dict[str, Any]) -> tuple[str, FunctionCall, list[str] | None]:
    """Query, gold call and the names of the functions in context (None: all) of a Nexusflow row."""
    if "Input" in row:
        return row["Input"], parse_python_call(row["Output"]), None
    if "python_function_name" in row:
        args = row["python_args_dict"]
        args = json.loads(args) if isinstance(args, str) else dict(args or {})
        context = row.get("context_functions")
        return row["prompt"], FunctionCall(row["python_function_name"], args), list(context) if context else None
    query = json.loads(row["query_dict"]) if isinstance(row["query_dict"], str) else row["query_dict"]
    if isinstance(query, dict) and {"query", "reference"} <= query.keys():
        return query["query"], parse_python_call(query["reference"]), None
    if isinstance(query, dict) and {"Input", "Output"} <= query.keys():
        return query["Input"], parse_python_call(query["Output"]), None
    keys = sorted(query) if isinstance(query, dict) else type(query).__name__
    raise UnsupportedShape(f"query_dict holds {keys} (dataset {row.get('dataset')})")


def nexus_items(
    rows: Iterable[dict[str, Any]], functions: list[dict[str, Any]]
) -> tuple[list[EvalItem], list[tuple[int, str]]]:
    by_name = {f["name"]: f for f in functions}
    items, skipped = [], []
    for index, row in enumerate(rows):
        try:
            query, gold, context = _nexus_row(row)
        except UnsupportedShape as err:
            skipped.append((index, f"unsupported shape: {err}"))
            continue
        except (PythonCallError, json.JSONDecodeError, KeyError, TypeError) as err:
            skipped.append((index, f"unreadable reference: {err}"))
            continue
        in_context = [by_name[n] for n in context if n in by_name] if context else functions
        if gold.name not in {f["name"] for f in in_context}:
            skipped.append((index, f"gold function {gold.name!r} is not among the functions given"))
            continue
        items.append(_query_item(index, query, gold, in_context))
    return items, skipped


NEXUS_COLUMNS = ({"Input", "Output"}, {"prompt", "python_function_name"}, {"query_dict"})


def eval_items(
    rows, functions: list[dict[str, Any]] | None
) -> tuple[list[EvalItem], list[tuple[int, str]]]:
    """Items from rows of any supported shape (see the module docstring)."""
    columns = set(rows.column_names if hasattr(rows, "column_names") else rows[0].keys())
    if {"system", "chat"} <= columns:
        return glaive_items(rows)
    if any(needed <= columns for needed in NEXUS_COLUMNS):
        if not functions:
            raise UserError("this benchmark has no function schemas in its rows: give --functions")
        return nexus_items(rows, functions)
    raise UserError(f"unknown evaluation data shape (columns: {sorted(columns)})")
