"""Packing: a packed, padding-free batch gives exactly the token-weighted loss of its examples
run one by one, so no attention crosses an example boundary."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from fcmistral.data.labels import IGNORE_INDEX, examples_from_rows
from fcmistral.data.packing import VARLEN_SDPA, PackedCollator, pack_examples, packed_attention
from fcmistral.format.glaive import parse_row


@pytest.mark.parametrize("attention", ["sdpa", VARLEN_SDPA])
def test_packed_loss_equals_token_weighted_loss_one_by_one(attention, sample_rows, tiny_model_dir, tiny_tokenizer):
    """Under transformers' SDPA (block-diagonal mask from the position ids) and under the
    per-example SDPA that ``--packing`` uses on machines without FlashAttention."""
    from transformers import AutoModelForCausalLM

    if attention == VARLEN_SDPA:
        assert packed_attention() == VARLEN_SDPA  # no GPU here: registers it

    examples = examples_from_rows([parse_row(r) for r in sample_rows[:6]], tiny_tokenizer, 4096)
    ds = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    packed = pack_examples(ds, max_length=sum(len(e.input_ids) for e in examples))
    assert len(packed) == 1 and sorted(packed[0]["seq_lengths"]) == sorted(len(e.input_ids) for e in examples)
    batch = PackedCollator()([packed[0]])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert (batch["input_ids"] != tiny_tokenizer.pad_token_id).all()  # no padding at all

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attention)
    model.eval()
    assert model.config.use_cache  # the default that breaks packing unless the batch turns it off
    total, tokens = 0.0, 0
    with torch.no_grad():
        for e in examples:
            labels = torch.tensor([e.labels])
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += float(model(input_ids=torch.tensor([e.input_ids]), labels=labels).loss) * n
            tokens += n
        packed_loss = float(model(**batch).loss)
        # The same packed tokens with one causal mask over everything (attention across examples).
        leaky = float(model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss)
        # Padded batches still get their padding mask: left padding, which would leak into every
        # token without it (rotary attention only sees relative positions, so no position ids).
        short, long = sorted(examples[:2], key=lambda e: len(e.input_ids))
        pad = len(long.input_ids) - len(short.input_ids)
        ids = torch.tensor([[tiny_tokenizer.pad_token_id] * pad + short.input_ids, long.input_ids])
        mask = torch.tensor([[0] * pad + [1] * len(short.input_ids), [1] * len(long.input_ids)])
        logits = model(input_ids=ids, attention_mask=mask).logits[0, pad:]
        assert torch.allclose(logits, model(input_ids=torch.tensor([short.input_ids])).logits[0], atol=1e-4)
        assert not torch.allclose(model(input_ids=ids).logits[0, pad:], logits, atol=1e-2)  # the mask matters
    assert abs(packed_loss - total / tokens) < 1e-4
    assert abs(leaky - total / tokens) > 1e-3  # shows the test would catch cross-example attention


def test_packing_respects_max_length(sample_rows, tiny_tokenizer):
    examples = examples_from_rows([parse_row(r) for r in sample_rows[:40]], tiny_tokenizer, 4096)
    ds = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    packed = pack_examples(ds, max_length=1024)
    lengths = [len(r["input_ids"]) for r in packed]
    assert max(lengths) <= 1024 and sum(lengths) == sum(len(e.input_ids) for e in examples)
    assert len(packed) < len(examples) / 2


def test_padding_free_keeps_examples_whole_and_batches_them_flat(sample_rows, tiny_model_dir, tiny_tokenizer):
    """--padding_free: the dataset stays one example per row (the sampler draws random batches);
    a batch becomes one padding-free sequence with a boundary per example."""
    from transformers import AutoModelForCausalLM

    from fcmistral.data.packing import padding_free_training

    examples = examples_from_rows([parse_row(r) for r in sample_rows[:5]], tiny_tokenizer, 4096)
    ds = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    same, collate = padding_free_training(model, ds, 1024, pack=False)
    assert same is ds and model.config._attn_implementation == VARLEN_SDPA
    batch = collate([ds[i] for i in range(3)])
    lengths = [len(e.input_ids) for e in examples[:3]]
    assert batch["input_ids"].shape == (1, sum(lengths)) and batch["cu_seq_lens_q"].tolist() == [
        0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    packed, _ = padding_free_training(model, ds, 4096, pack=True)
    assert len(packed) < len(ds)
