"""The GPU plan: QLoRA training steps on Mistral-7B built from its real configuration with random
weights (no download), the original's settings against ours, peak memory and tokens/s side by side.

    python benchmarks/gpu_qlora.py                     # on a GPU: sequences of 2048 and 4096
    python benchmarks/gpu_qlora.py --tiny --steps 2    # a smoke run of the same code on the CPU

original: padded batches (batch 1 here, as the original ran), eager attention, gradient
checkpointing, LoRA on all linear layers after peft's ``prepare_model_for_kbit_training`` (the usual
QLoRA recipe the original follows: every parameter that is not 4-bit cast to fp32). ours: packed
padding-free rows with varlen attention (FlashAttention-2 when installed, else SDPA per example, as
train.py --packing), gradient checkpointing. Anchors to compare with: Unsloth reports 1.88x speed and
-65.9% memory against plain HF on an A100; LLaMA-Factory estimates ~6 GB for a 7B
QLoRA. Random weights do not change the cost of a step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import peak_rss_mib
from transformers import AutoModelForCausalLM, MistralConfig

from fcmistral.data.packing import PackedCollator, packed_attention
from fcmistral.modeling import keep_4bit_backward_exact
from fcmistral.training.lora import lora_config, wrap_lora

MISTRAL_7B = dict(  # mistralai/Mistral-7B-v0.1's config.json
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096,
)
TINY = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)


def quantize_linear_layers(model: torch.nn.Module, device: torch.device) -> None:
    """NF4 (double quantization, bf16 compute) for every linear layer but the head, as
    ``from_pretrained(quantization_config=...)`` does when it loads real weights."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and child_name != "lm_head":
                with torch.device("meta"):  # its own weight is replaced at once: never drawn
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.to(torch.bfloat16), requires_grad=False,
                                             compress_statistics=True, quant_type="nf4")
                setattr(module, child_name, q.to(device))


def build(config: dict, attn: str, device: torch.device, original: bool):
    cfg = MistralConfig(**config, attn_implementation=attn, use_cache=False)
    # Drawn on the device itself: 7B random bf16 weights drawn on the CPU took minutes of a GPU lease.
    with device:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    quantize_linear_layers(model, device)
    model.to(device)
    model.is_loaded_in_4bit = True  # what from_pretrained sets on a 4-bit model
    keep_4bit_backward_exact(model)
    if original:  # fp32 embeddings, norms and head, as the original trained (ours keeps the compute dtype)
        from peft import get_peft_model, prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # reentrant: transformers' default when the original ran
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
        return get_peft_model(model, lora_config())
    return wrap_lora(model, lora_config(), gradient_checkpointing=True)


def run(label: str, config: dict, attn: str, seq: int, packed: bool, steps: int, device: torch.device) -> dict:
    model = build(config, attn, device, original=not packed)
    if device.type == "cuda":  # the peak of the steps, not of the bf16 weights before quantization
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    lengths = [seq // 4, seq // 2, seq // 8, seq // 4 + seq // 8, seq // 8]  # a spread like glaive's
    gen = torch.Generator().manual_seed(0)

    def example(n: int) -> dict:
        ids = torch.randint(3, config["vocab_size"], (n,), generator=gen).tolist()
        return {"input_ids": ids, "labels": ids}

    if packed:  # rows filled with whole examples up to seq tokens, no padding
        collate, rows, row, used = PackedCollator(), [], [], 0
        for n in lengths * 8:
            if used + n > seq:
                rows.append(row)
                row, used = [], 0
            row.append(n)
            used += n
        batches = [collate([{**example(sum(r)), "seq_lengths": r}]) for r in rows[:steps + 1]]
    else:  # the original: one example per step (batch 1), nothing to pad
        batches = [{k: torch.tensor([v]) for k, v in example(n).items()} for n in (lengths * 8)[:steps + 1]]
    tokens = 0
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if i == 1:  # step 0 warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 1:
            tokens += batch["input_ids"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_mib() / 1024
    del model, optimizer
    return {"setup": label, "seq": seq, "tokens_per_s": round(tokens / seconds, 1), "peak_gib": round(peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config (smoke test, CPU)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seq", type=int, nargs="+", default=[2048, 4096])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TINY if args.tiny else MISTRAL_7B
    ours_attn = packed_attention()  # what train.py --packing uses: FlashAttention-2 varlen or per-example SDPA
    results = []
    for seq in ([256] if args.tiny else args.seq):
        original = run("original (batch 1, eager)", config, "eager", seq, False, args.steps, device)
        ours = run(f"ours (packed, {ours_attn})", config, ours_attn, seq, True, args.steps, device)
        results += [original, ours, {"seq": seq, "speedup": round(ours["tokens_per_s"] / original["tokens_per_s"], 2),
                                     "memory_ratio": round(ours["peak_gib"] / original["peak_gib"], 2)}]
    print(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
