"""Packing: several examples per sequence, with no attention across them and no padding.

TRL's best-fit-decreasing ``pack_dataset`` groups whole examples into rows of at most
``max_length`` tokens. Each batch is then flattened by transformers' ``DataCollatorWithFlattening``
into one padding-free sequence whose ``position_ids`` restart at every example: from them the model
builds a block-diagonal causal mask (SDPA/eager), or FlashAttention gets the varlen boundaries.
An example's first token is BOS with label -100, so no loss crosses a boundary.

Trap: transformers only reads example boundaries from ``position_ids`` when the forward has no
KV cache, and with ``use_cache=True`` (the config default) the model creates one even in training,
so attention silently spans the whole packed row. The batch therefore carries ``use_cache=False``.
"""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorWithFlattening


def pack_examples(dataset, max_length: int):
    """Rows of whole examples (``input_ids``, ``labels``, ``seq_lengths``), each ≤ ``max_length``."""
    from trl.data_utils import pack_dataset

    columns = [c for c in dataset.column_names if c not in ("input_ids", "labels")]
    return pack_dataset(dataset.remove_columns(columns), max_length, strategy="bfd")


class PackedCollator:
    """Flatten a batch of packed rows into one sequence, position ids restarting per example.

    A row without ``seq_lengths`` (an unpacked example, as in the dev set) is a row of one.
    """

    def __init__(self, flash_attention: bool = False) -> None:
        self.flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=flash_attention)

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
