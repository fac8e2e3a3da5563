"""Padding and training throughput: the original's batching (batch 1, padded batches) against
packed, padding-free rows, with QLoRA steps on the tiny model (CPU) or any model given.

    python benchmarks/packing_speed.py [--model_path artifacts/tiny-mistral]

Each mode trains on the same shuffled examples for the same number of optimizer steps' worth of
examples; tokens/s counts real (non-padding) tokens. Ratios are measured in this process.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import torch
from common import model_or_tiny, peak_rss_mib
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq

from fcmistral.data.labels import IGNORE_INDEX
from fcmistral.data.loading import load_rows, tokenize_rows
from fcmistral.data.packing import PackedCollator, pack_examples, packed_attention
from fcmistral.modeling import load_model, load_tokenizer
from fcmistral.training.lora import lora_config, wrap_lora


def batches_for(mode: str, examples: list[dict], batch_size: int, max_length: int, tokenizer):
    if mode == "batch1":
        collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        return [collate([e]) for e in examples]
    if mode == "padded":
        collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        return [collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    packed = pack_examples(Dataset.from_list(examples), max_length)  # "packed" and "packed_block_mask"
    collate = PackedCollator()
    return [collate([row]) for row in packed]


def real_tokens(batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--data_path", default="data/sample_train.jsonl")
    parser.add_argument("--examples", type=int, default=96, help="examples each mode trains on")
    parser.add_argument("--batch_size", type=int, default=8, help="examples per padded batch")
    parser.add_argument("--max_length", type=int, default=2048, help="tokens per packed row")
    parser.add_argument("--load_in_4bit", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="QLoRA on a 4-bit base (false: plain LoRA)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_or_tiny(args.model_path, tmp)
        tokenizer = load_tokenizer(model_path)
        ds, _, _ = tokenize_rows(load_rows(args.data_path), tokenizer, args.max_length)
        examples = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds]
        random.Random(0).shuffle(examples)
        examples = examples[: args.examples]
        model = load_model(model_path, load_in_4bit=args.load_in_4bit, tokenizer=tokenizer)
        model.config.use_cache = False
        model = wrap_lora(model, lora_config(), gradient_checkpointing=False)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        report = {"examples": len(examples), "mean_tokens": sum(len(e["input_ids"]) for e in examples) / len(examples)}
        modes = {"batch1": "sdpa", "padded": "sdpa", "packed_block_mask": "sdpa", "packed": packed_attention()}
        for mode, attention in modes.items():
            model.set_attn_implementation(attention)
            batches = batches_for(mode, examples, args.batch_size, args.max_length, tokenizer)
            total = sum(b["input_ids"].numel() for b in batches)
            real = sum(real_tokens(b) for b in batches)
            loss = model(**batches[0]).loss  # warm-up step, not timed
            loss.backward()
            optimizer.zero_grad()
            start = time.perf_counter()
            for batch in batches:
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            seconds = time.perf_counter() - start
            report[mode] = {"attention": attention, "steps": len(batches), "padding_fraction": round(1 - real / total, 4),
                            "tokens_per_s": round(real / seconds, 1), "seconds": round(seconds, 1)}
        report["packed_vs_padded_tokens_per_s"] = round(report["packed"]["tokens_per_s"] / report["padded"]["tokens_per_s"], 2)
        report["varlen_vs_block_mask_tokens_per_s"] = round(
            report["packed"]["tokens_per_s"] / report["packed_block_mask"]["tokens_per_s"], 2)
        report["packed_vs_batch1_tokens_per_s"] = round(report["packed"]["tokens_per_s"] / report["batch1"]["tokens_per_s"], 2)
        report["peak_rss_mib"] = round(peak_rss_mib())
        report["model"] = "tiny (built here)" if args.model_path is None else args.model_path
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
