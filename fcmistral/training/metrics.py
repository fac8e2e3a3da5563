"""Metrics beside the dev loss at each evaluation, computed by generating with the model in training
(train.py's ``--call_eval_data``: fcmistral.evaluation.probes); fcmistral.training.trainer adds them."""

from __future__ import annotations

from typing import Callable

import torch

from fcmistral.generation import generate_batch, length_sorted_batches
from fcmistral.turns import Conversation, replies

ExtraMetrics = Callable[[torch.nn.Module], dict[str, float]]


def generation_metrics(conversations: list[Conversation], score: Callable[[list[str]], dict[str, float]], tokenizer,
                       max_new_tokens: int, batch_size: int) -> ExtraMetrics:
    """Greedy replies to ``conversations`` from the model as it is (their turns as the chat runs
    them: fcmistral.turns.replies), scored by ``score``.

    The model is put in eval mode with its KV cache on for the generation (training runs without
    either), then restored.
    """
    def metrics(model: torch.nn.Module) -> dict[str, float]:
        was_training, use_cache = model.training, model.config.use_cache
        model.eval()
        model.config.use_cache = True

        def generate(prompts: list[str], constraints, limit: int | None) -> list[str]:
            return generate_batch(model, tokenizer, prompts, limit or max_new_tokens)

        try:
            outputs = [""] * len(conversations)
            for indices in length_sorted_batches([c.prompt for c in conversations], batch_size):
                for i, reply in zip(indices, replies(generate, [conversations[i] for i in indices])):
                    outputs[i] = reply
        finally:
            model.config.use_cache = use_cache
            model.train(was_training)
        return score(outputs)

    return metrics
