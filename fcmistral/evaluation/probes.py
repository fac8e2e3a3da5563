"""A fixed sample of held-out prompts scored by generating with the model being trained: a metric to
pick the checkpoint by (``--call_eval_data`` of train.py and FSDP/train.py), logged beside the dev loss.

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

import logging
from typing import Any

import torch
import torch.distributed as dist

from fcmistral.arguments import CallEvalArguments
from fcmistral.errors import UserError
from fcmistral.evaluation.items import EvalItem, glaive_items
from fcmistral.evaluation.scoring import judge
from fcmistral.generation import generate_batch, length_sorted_batches
from fcmistral.modeling import ModelMetrics
from fcmistral.turns import replies

log = logging.getLogger(__name__)


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


def _processes() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def probe_metrics(options: CallEvalArguments, rows: list[dict[str, Any]], tokenizer, metric_for_best_model: str,
                  batch_size: int = 8) -> ModelMetrics:
    """``call_metrics`` of greedy replies to the probes of ``rows`` (``options.call_eval_data``'s), from
    the model as it is: their turns as the chat runs them (fcmistral.turns.replies).

    The model is put in eval mode with its KV cache on for the generation (training runs without
    either), then restored. With several processes (FSDP, DeepSpeed ZeRO-3, DDP) every process
    generates every reply, in step: each forward gathers sharded weights from all of them, so
    ``generate`` keeps stepping until every process is done (``synced_gpus``), and every process
    goes on from rank 0's replies, so they also agree on which need a further turn.
    """
    probes = load_probes([dict(row) for row in rows], options.call_eval_limit)
    if not probes:
        raise UserError(f"--call_eval_data {options.call_eval_data!r} holds no row with a call or a refusal to score")
    calls, declines = sum(p.gold is not None for p in probes), sum(p.gold is None for p in probes)
    missing = {"call_exact": not calls, "no_call_accuracy": not declines}.get(metric_for_best_model.removeprefix("eval_"))
    if missing:
        raise UserError(f"--metric_for_best_model {metric_for_best_model}: the {len(probes)} prompts scored from "
                        f"--call_eval_data {options.call_eval_data!r} hold none of that kind (raise --call_eval_limit)")
    log.info("call scoring at each evaluation: %d held-out prompts (%d calls, %d declines)", len(probes), calls,
             declines)

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        was_training, use_cache = model.training, model.config.use_cache
        model.eval()
        model.config.use_cache = True
        synced = _processes() > 1

        def generate(prompts: list[str], constraints, limit: int | None) -> list[str]:
            texts = generate_batch(model, tokenizer, prompts, limit or options.call_eval_max_new_tokens,
                                   synced_gpus=synced)
            if synced:
                agreed = [texts]
                dist.broadcast_object_list(agreed, src=0)
                texts = agreed[0]
            return texts

        try:
            outputs = [""] * len(probes)
            for indices in length_sorted_batches([p.prompt for p in probes], batch_size):
                for i, reply in zip(indices, replies(generate, [probes[i] for i in indices])):
                    outputs[i] = reply
        finally:
            model.config.use_cache = use_cache
            model.train(was_training)
        return call_metrics(outputs, probes)

    return metrics
