"""The demo's verdict: did the tiny model learn? Says so in plain words, with what to run next."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description="Report the demo's eval loss and call-name accuracy.")
    parser.add_argument("--train_dir", required=True, help="train.py output folder (train_summary.json)")
    parser.add_argument("--eval_dir", required=True, help="evaluate.py output folder (summary.json)")
    parser.add_argument("--model_path", default="artifacts/tiny-mistral", help="the base model, for the next commands")
    parser.add_argument("--min_name_accuracy", type=float, default=0.8, help="exit 1 below this")
    args = parser.parse_args()
    train_summary = json.loads(Path(args.train_dir, "train_summary.json").read_text())
    history = train_summary["eval_history"]
    summary = json.loads(Path(args.eval_dir, "summary.json").read_text())
    first, best = history[0]["eval_loss"], min(h["eval_loss"] for h in history)
    named, n = round(summary["name_accuracy"] * summary["n"]), summary["n"]
    exact = round(summary["exact_match"] * n)
    passed = summary["name_accuracy"] >= args.min_name_accuracy
    print(f"demo: trained {train_summary['global_step']} steps; "
          f"eval loss {first:.3f} (step {history[0]['step']}) -> {best:.3f} (best)")
    print(f"demo: parseable call with the right function name on held-out prompts: "
          f"{named}/{n} = {summary['name_accuracy']:.1%} (exact match {summary['exact_match']:.1%})")
    print(f"""
What this means: the model started from random weights and, from {train_summary['global_step']} QLoRA steps on
the sample conversations, learnt the glaive function-calling format.
  - call-name accuracy {summary['name_accuracy']:.0%}: for {named} of {n} requests it had never seen, it answered
    with a well-formed <functioncall> naming the right function (the demo's bar: {args.min_name_accuracy:.0%});
  - exact match {summary['exact_match']:.0%}: in {exact} of them every argument was also exactly right (a
    1M-parameter model rarely copies numbers and names; Mistral-7B does, see docs/training.md).""")
    if not passed:
        print(f"demo: FAILED: call-name accuracy below the {args.min_name_accuracy:.0%} bar "
              f"(log and figures: {args.eval_dir})", file=sys.stderr)
        sys.exit(1)
    merged = f"{args.train_dir}-merged"
    print(f"""
demo: passed. Next, merge the adapter into the model, then talk to it or serve it:
    python convert_weights.py --model_path {args.model_path} --adapter_path {args.train_dir} --save_path {merged}
    python inference.py --model_path {merged} --prompt "What's the weather like in Paris? Use celsius."
    python inference.py --model_path {merged} --serve --port 8000    # OpenAI-compatible API""")


if __name__ == "__main__":
    main()
