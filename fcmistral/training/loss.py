"""The training loss, with the decision tokens weighed more where asked (``--decision_weight``).

Written here because neither transformers' loss (``ForCausalLMLoss``) nor TRL's trainers take a
weight per token. Without weights it is the model's own loss; with them (``loss_weights`` in the
batch, from fcmistral.data.labels.SupervisedLogits) the same cross-entropy in fp32 over the same kept
targets, each token's term multiplied by its weight and the sum divided, as the model's loss is,
by the number of supervised tokens of the whole batch (``num_items_in_batch``): tokens of weight 1
keep their scale, so the optimiser settings stay valid, and a decision of weight W counts W times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = "loss_weights"


def supervised_loss(model: torch.nn.Module, batch: dict, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """The loss of a batch from ``SupervisedLogits`` (``num_items_in_batch``: None for this batch's
    own supervised tokens)."""
    if WEIGHTS not in batch:
        return model(**batch, num_items_in_batch=num_items_in_batch).loss
    inputs = {k: v for k, v in batch.items() if k not in (WEIGHTS, "labels", "shift_labels")}
    logits = model(**inputs).logits  # the kept positions only (logits_to_keep), in the targets' order
    targets = batch["shift_labels"].to(logits.device)
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets, reduction="none")
    total = (losses * batch[WEIGHTS].to(losses.device)).sum()
    return total / (num_items_in_batch if num_items_in_batch is not None else targets.numel())
