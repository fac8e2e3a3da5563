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

from typing import Any

from fcmistral.evaluation.items import EvalItem, glaive_items
from fcmistral.evaluation.scoring import judge


def load_probes(rows: list[dict[str, Any]], limit: int) -> list[EvalItem]:
    """The first ``limit`` probes (held-out items: ``gold`` None for a declining one), calls and
    declines in the proportion the rows hold them."""
    items = glaive_items(rows)[0]
    calls, declines = [i for i in items if i.gold is not None], [i for i in items if i.gold is None]
    total = len(calls) + len(declines)
    if total <= limit:
        return calls + declines
    kept_declines = round(limit * len(declines) / total)
    return calls[: limit - kept_declines] + declines[:kept_declines]


def call_metrics(outputs: list[str], probes: list[EvalItem]) -> dict[str, float]:
    """``call_accuracy`` over every probe, and each kind alone (see the module docstring)."""
    right = [bool(judge(o, p.gold)["exact_match"]) for o, p in zip(outputs, probes)]
    metrics = {"call_accuracy": sum(right) / len(right)}
    for name, gold_call in (("call_exact", True), ("no_call_accuracy", False)):
        kind = [r for r, p in zip(right, probes) if (p.gold is not None) == gold_call]
        if kind:
            metrics[name] = sum(kind) / len(kind)
    return metrics
