"""The demo's verdict: did the tiny model learn? Prints the figures run.sh promises."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description="Report the demo's eval loss and call-name accuracy.")
    parser.add_argument("--train_dir", required=True, help="train.py output folder (train_summary.json)")
    parser.add_argument("--eval_dir", required=True, help="evaluate.py output folder (summary.json)")
    parser.add_argument("--min_name_accuracy", type=float, default=0.8, help="exit 1 below this")
    args = parser.parse_args()
    train_summary = json.loads(Path(args.train_dir, "train_summary.json").read_text())
    history = train_summary["eval_history"]
    summary = json.loads(Path(args.eval_dir, "summary.json").read_text())
    first, best = history[0]["eval_loss"], min(h["eval_loss"] for h in history)
    named = round(summary["name_accuracy"] * summary["n"])
    print(f"demo: trained {train_summary['global_step']} steps; "
          f"eval loss {first:.3f} (step {history[0]['step']}) -> {best:.3f} (best)")
    print(f"demo: parseable call with the right function name on held-out prompts: "
          f"{named}/{summary['n']} = {summary['name_accuracy']:.1%} (exact match {summary['exact_match']:.1%})")
    if summary["name_accuracy"] < args.min_name_accuracy:
        print(f"demo: below the {args.min_name_accuracy:.0%} target", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
