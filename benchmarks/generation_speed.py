"""Evaluation generation: batched (left padding) against one prompt at a time (the original's way).

    python benchmarks/generation_speed.py [--model_path M] [--adapter_path A]

92 prompts (the OTX benchmark's size) built from the held-out sample file, greedy decoding with a
fixed number of new tokens so that both ways do the same work; batches group prompts of similar
length, as evaluate.py does. Ratio measured in this process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from common import model_or_tiny, peak_rss_mib

from fcmistral.data.loading import load_rows
from fcmistral.evaluation.items import eval_items
from fcmistral.generation import generate_batch, length_sorted_batches, load_for_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--adapter_path", default=None)
    parser.add_argument("--dataset", default="data/sample_heldout.jsonl")
    parser.add_argument("--prompts", type=int, default=92)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_or_tiny(args.model_path, tmp)
        items, _ = eval_items(load_rows(args.dataset), None)
        prompts = [items[i % len(items)].prompt for i in range(args.prompts)]
        model, tokenizer = load_for_generation(model_path, args.adapter_path)
        # Fixed work per prompt (an untrained model would stop at random places otherwise).
        options = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}
        generate_batch(model, tokenizer, prompts[:2], **options)  # warm-up
        timings = {}
        start = time.perf_counter()
        for prompt in prompts:
            generate_batch(model, tokenizer, [prompt], **options)
        timings["one_at_a_time"] = time.perf_counter() - start
        start = time.perf_counter()  # as evaluate.py batches: prompts of similar length together
        for indices in length_sorted_batches(prompts, args.batch_size):
            generate_batch(model, tokenizer, [prompts[i] for i in indices], **options)
        timings["batched"] = time.perf_counter() - start
    print(json.dumps({
        "prompts": len(prompts), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "one_at_a_time_s": round(timings["one_at_a_time"], 1), "batched_s": round(timings["batched"], 1),
        "speedup": round(timings["one_at_a_time"] / timings["batched"], 2), "peak_rss_mib": round(peak_rss_mib()),
    }, indent=2))


if __name__ == "__main__":
    main()
