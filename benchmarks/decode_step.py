"""Prefill and decode-step times with plain linear layers against oneDNN-prepacked ones (fcmistral.prepacked).

    python benchmarks/decode_step.py [--model_path artifacts/smollm2-135m] [--rounds 5]

Two copies of the model in bf16 (the dtype prepacking applies to), measured in turns within one run
(round 1 plain, round 1 prepacked, round 2 plain, ...), so the machine's noise falls on both: a prompt
of ``--prompt_tokens`` for 1 and 8 rows, then ``--steps`` decode steps of those rows with their KV
cache. Prints the median of the rounds per case, the ratio, and whether the logits agree to the bit.
Refuses to run where prepacking does not apply (no native bf16 on this CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from common import model_or_tiny
from transformers import DynamicCache

from fcmistral.generation import load_for_generation
from fcmistral.prepacked import can_prepack


@torch.inference_mode()
def timed(model, ids: torch.Tensor, steps: int) -> tuple[float, float, torch.Tensor]:
    """(prefill seconds, seconds per decode step, the prompt's last logits)."""
    cache = DynamicCache()
    start = time.perf_counter()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    prefill = time.perf_counter() - start
    logits, token = out.logits[:, -1].float(), out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return prefill, (time.perf_counter() - start) / steps, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt_tokens", type=int, default=200)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_or_tiny(args.model_path, tmp)
        plain, tokenizer = load_for_generation(model_path, dtype=torch.bfloat16, prepack=False)
        if not can_prepack(plain):
            raise SystemExit("error: prepacking does not apply here (no native bf16 kernels on this CPU)")
        prepacked, _ = load_for_generation(model_path, dtype=torch.bfloat16)
        text = "What's the weather like in Paris today, and what should I wear for a walk? " * 40
        prompt = tokenizer(text, return_tensors="pt").input_ids[:, :args.prompt_tokens]
        times: dict[str, list[float]] = {}
        agree = True
        for _ in range(args.rounds):
            for rows in (1, 8):
                ids = prompt.repeat(rows, 1)
                results = {name: timed(model, ids, args.steps) for name, model in
                           (("plain", plain), ("prepacked", prepacked))}
                agree &= torch.equal(results["plain"][2], results["prepacked"][2])
                for name, (prefill, step, _) in results.items():
                    times.setdefault(f"prefill_{rows}_{name}", []).append(prefill)
                    times.setdefault(f"step_{rows}_{name}", []).append(step)
    report = {"model": args.model_path or "tiny", "threads": torch.get_num_threads(), "rounds": args.rounds,
              "prompt_tokens": prompt.shape[1], "logits_identical": agree}
    for case in ("prefill_1", "prefill_8", "step_1", "step_8"):
        plain_ms, packed_ms = (1e3 * statistics.median(times[f"{case}_{name}"]) for name in ("plain", "prepacked"))
        report[case] = {"plain_ms": round(plain_ms, 2), "prepacked_ms": round(packed_ms, 2),
                        "ratio": round(packed_ms / plain_ms, 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
