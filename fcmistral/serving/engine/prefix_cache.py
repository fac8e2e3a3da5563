"""The prefix cache: the keys/values of the last prompt (or shared prompt prefix) computed, kept for
the next requests that start the same way (the same tools' system prompt, a conversation going on)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

MIN_SHARED_PREFIX = 16  # tokens: below this, computing a prefix apart costs more than it saves


class PrefixCache:
    """One prompt's keys/values per layer. Tensors are never changed in place (caches grow by
    concatenation), so keeping them is safe."""

    def __init__(self, model) -> None:
        self.model = model
        self.kept: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] = ([], [])

    def keep(self, ids: list[int], cache: DynamicCache) -> None:
        """Keep ``cache`` (one unpadded row) as the keys/values of ``ids``."""
        self.kept = (ids, [(layer.keys, layer.values) for layer in cache.layers])

    def shared(self, ids: list[list[int]]) -> tuple[int, DynamicCache]:
        """How many first tokens all rows share whose keys/values are computed once (0 if too few to
        be worth it), and a cache holding them for every row. They are taken from the kept prefix
        when it covers them, else computed now and kept."""
        shared = common_prefix(ids, min(len(r) for r in ids) - 1)  # each row keeps a token of its own
        cache = DynamicCache()
        kept_ids, kept_layers = self.kept
        reused = common_prefix([ids[0], kept_ids], shared)
        if reused >= MIN_SHARED_PREFIX:
            for index, (keys, values) in enumerate(kept_layers):  # copied: the kept tensors stay as they are
                cache.update(keys[:, :, :reused], values[:, :, :reused], index)
            shared = reused
        elif shared >= MIN_SHARED_PREFIX and len(ids) > 1:
            self.model(input_ids=torch.tensor([ids[0][:shared]], device=self.model.device), past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
            self.keep(ids[0][:shared], cache)
        else:
            return 0, cache
        cache.batch_repeat_interleave(len(ids))
        return shared, cache


def common_prefix(ids: list[list[int]], limit: int) -> int:
    """How many first tokens all rows have in common, at most ``limit``."""
    limit, length = min(limit, *(len(r) for r in ids)), 0
    while length < limit and all(r[length] == ids[0][length] for r in ids):
        length += 1
    return length
