"""Packing: several examples per sequence, with no attention across them and no padding.

TRL's best-fit-decreasing ``pack_dataset`` groups whole examples into rows of at most
``max_length`` tokens. Each batch is then flattened by transformers' ``DataCollatorWithFlattening``
into one padding-free sequence whose ``position_ids`` restart at every example: from them the model
builds a block-diagonal causal mask (SDPA/eager), or FlashAttention gets the varlen boundaries.
An example's first token is BOS with label -100, so no loss crosses a boundary.

Attention: with a block-diagonal mask, SDPA still computes the whole packed row's attention
(quadratic in the row, not in the examples), which on CPU costs as much as the padding saved.
``packed_attention()`` picks FlashAttention-2's varlen kernel on a GPU where ``flash_attn`` is
installed, and otherwise ``sdpa_varlen``: SDPA run causally on each example's slice of the row, with
no mask (the varlen kernel's arithmetic, written with PyTorch's own kernels).

Trap: transformers only reads example boundaries from ``position_ids`` when the forward has no
KV cache, and with ``use_cache=True`` (the config default) the model creates one even in training,
so attention silently spans the whole packed row. The batch therefore carries ``use_cache=False``.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DataCollatorWithFlattening
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from fcmistral.data.epochs import EpochDraws
from fcmistral.data.labels import DECISION

VARLEN_SDPA = "sdpa_varlen"


def pack_examples(dataset, max_length: int):
    """Rows of whole examples (``input_ids``, ``labels``, the decision marks where there are any,
    ``seq_lengths``), each ≤ ``max_length``."""
    from trl.data_utils import pack_dataset

    columns = [c for c in dataset.column_names if c not in ("input_ids", "labels", DECISION)]
    return pack_dataset(dataset.remove_columns(columns), max_length, strategy="bfd")


def varlen_sdpa_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention for a flattened packed batch: causal SDPA on each example's slice, read from the
    ``cu_seq_lens_q`` boundaries that PackedCollator sends. Any other batch (padded, generation
    with a cache, an example longer than the sliding window) goes to transformers' SDPA with its
    mask."""
    bounds = kwargs.get("cu_seq_lens_q")
    window = kwargs.get("sliding_window")
    if bounds is not None and query.shape[0] == 1:
        slices = list(pairwise(bounds.tolist()))
        if slices[-1][1] == query.shape[2] and not (window and max(e - s for s, e in slices) > window):
            gqa = query.shape[1] != key.shape[1]
            out = torch.cat([
                F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout,
                                               scale=scaling, is_causal=True, enable_gqa=gqa)
                for s, e in slices
            ], dim=2)
            return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def packed_attention() -> str:
    """The attention implementation for packed training (see the module docstring)."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_SDPA, sdpa_mask)  # padded (eval) batches still get their mask
    return VARLEN_SDPA


class PackedCollator:
    """Flatten a batch of packed rows into one sequence, position ids restarting per example, with
    the example boundaries (``cu_seq_lens_*``) that varlen attention reads.

    A row without ``seq_lengths`` (an unpacked example, as in the dev set) is a row of one.
    """

    def __init__(self) -> None:
        self.flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=True)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        examples = []
        for row in rows:
            start = 0
            for length in row.get("seq_lengths") or [len(row["input_ids"])]:
                examples.append({"input_ids": row["input_ids"][start:start + length],
                                 "labels": row["labels"][start:start + length]})
                start += length
        batch = self.flatten(examples)
        batch["use_cache"] = False  # see the module docstring: without it, examples attend to each other
        return batch


def padding_free_training(model, dataset, max_length: int, pack: bool) -> tuple[Any, PackedCollator]:
    """What ``--padding_free`` and ``--packing`` mean in both training scripts: every batch is
    flattened into one sequence without padding, and the model switched to the packed attention
    (see packed_attention). With ``pack``, the examples are first packed into fixed rows of up to
    ``max_length`` tokens (a batch then counts rows); without it, a batch is drawn at random from
    the examples each epoch, as padded batches are.

    Why both: best-fit-decreasing packing sorts examples by length, so a row holds examples of
    similar length and keeps them together for the whole run. Where length follows the kind of
    example (in the sample data each function has its own system prompt, hence its own length),
    each step sees few kinds: the demo learnt measurably less per example that way (README).
    """
    model.set_attn_implementation(packed_attention())
    if pack:  # each epoch's augmentation draw is packed on its own
        pack_draw = partial(pack_examples, max_length=max_length)
        dataset = dataset.then(pack_draw) if isinstance(dataset, EpochDraws) else pack_draw(dataset)
    return dataset, PackedCollator()
