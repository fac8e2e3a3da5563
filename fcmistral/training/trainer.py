"""train.py's Trainer: transformers' own, with generation metrics at each evaluation and the decision
tokens weighed in the loss where asked."""

from __future__ import annotations

from transformers import Trainer

from fcmistral.modeling import ModelMetrics
from fcmistral.training.loss import WEIGHTS, supervised_loss


class CallTrainer(Trainer):
    """A Trainer whose evaluations add ``extra_metrics(model)``, prefixed as the loss is (``eval_``),
    and whose loss weighs each target by the batch's ``loss_weights`` when it has them
    (fcmistral.training.loss).

    The metrics are added in ``evaluation_loop``, before the Trainer logs the metrics and compares them
    for the best checkpoint, so each one is logged beside ``eval_loss`` and can be
    ``--metric_for_best_model`` (a callback's ``on_evaluate`` runs after both).
    """

    def __init__(self, *args, extra_metrics: ModelMetrics | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra_metrics = extra_metrics

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        if self.extra_metrics is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")
            output.metrics.update({f"{prefix}_{k}": v for k, v in self.extra_metrics(self.model).items()})
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if WEIGHTS not in inputs or return_outputs:  # evaluation batches never carry weights
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # As the Trainer's own: the sum over the whole accumulated batch's tokens when the model takes
        # that count (it then skips dividing by the accumulation steps), and across devices, scaled
        # back up from the average that data parallelism takes.
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        loss = supervised_loss(model, inputs, num_items_in_batch if scaled else None)
        if scaled and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss
