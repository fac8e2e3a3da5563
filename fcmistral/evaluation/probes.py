"""A fixed sample of held-out prompts scored by generating with the model being trained: a metric to
pick the checkpoint by (train.py ``--call_eval_data``), logged beside the dev loss.

The dev loss rewards copying the data's phrasing; what a user wants from a checkpoint is the right
call, or the right absence of one. Two kinds of probe, from held-out glaive rows:
- a row's first call: right when the reply makes exactly that call (name and arguments, as
  ``scoring.judge`` reads it);
- a row whose assistant declines although functions are offered: right when the reply makes no call.
``call_accuracy`` is the mean over every probe, so a checkpoint that calls on every request gains
nothing from the second kind; ``call_exact`` and ``no_call_accuracy`` are each kind alone.

BFCL questions are not offered here on purpose: picking a checkpoint by them would tune on the
yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from fcmistral.evaluation.items import glaive_items
from fcmistral.evaluation.scoring import judge
from fcmistral.format.calls import contains_call
from fcmistral.format.glaive import RowParseError, parse_row
from fcmistral.prompt import FunctionCall, Turn, generation_prompt


@dataclass(frozen=True)
class Probe:
    system: str
    turns: list[Turn]
    gold: FunctionCall | None  # None: the right reply makes no call

    @property
    def prompt(self) -> str:
        return generation_prompt(self.system, self.turns)


def declining_probes(rows: Iterable[dict[str, Any]]) -> list[Probe]:
    """The rows that offer functions and never call one: the prompt up to their first assistant turn."""
    probes = []
    for row in rows:
        try:
            parsed = parse_row(row)
        except RowParseError:
            continue
        first = next((i for i, t in enumerate(parsed.turns) if t.is_assistant), None)
        if parsed.functions and first and all(t.role != "function_call" for t in parsed.turns):
            probes.append(Probe(parsed.system, parsed.turns[:first], None))
    return probes


def load_probes(rows: list[dict[str, Any]], limit: int) -> list[Probe]:
    """The first ``limit`` probes, calls and declines in the proportion the rows hold them."""
    calls = [Probe(item.system, item.turns, item.gold) for item in glaive_items(rows)[0]]
    declines = declining_probes(rows)
    total = len(calls) + len(declines)
    if total <= limit:
        return calls + declines
    kept_declines = round(limit * len(declines) / total)
    return calls[: limit - kept_declines] + declines[:kept_declines]


def probe_right(output: str, probe: Probe) -> bool:
    if probe.gold is None:
        return not contains_call(output)
    return bool(judge(output, probe.gold)["exact_match"])


def call_metrics(outputs: list[str], probes: list[Probe]) -> dict[str, float]:
    """``call_accuracy`` over every probe, and each kind alone (see the module docstring)."""
    right = [probe_right(o, p) for o, p in zip(outputs, probes)]
    metrics = {"call_accuracy": sum(right) / len(right)}
    for name, gold_call in (("call_exact", True), ("no_call_accuracy", False)):
        kind = [r for r, p in zip(right, probes) if (p.gold is not None) == gold_call]
        if kind:
            metrics[name] = sum(kind) / len(kind)
    return metrics
