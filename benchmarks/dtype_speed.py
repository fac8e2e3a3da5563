"""How fast each compute dtype (and thread count) is on this machine: bf16 against fp32 for a
matmul, an NF4 ``Linear4bit`` forward+backward, and tiny-model QLoRA training steps, plus the
training step with 1 and 2 threads, alone and beside a busy process.

    python benchmarks/dtype_speed.py

fcmistral.hardware chooses the dtype from the hardware; this script shows on any machine whether
that choice is the fast one (the figures differ 50-90x between CPU kinds). All times are measured
in this process and reported as ratios; each figure is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch
from common import model_or_tiny
from transformers import DataCollatorForSeq2Seq

from fcmistral.data.labels import IGNORE_INDEX
from fcmistral.data.loading import load_rows, tokenize_rows
from fcmistral.hardware import choose_compute_dtype, detect_hardware, model_hidden_size
from fcmistral.modeling import load_model, load_tokenizer
from fcmistral.training.lora import lora_config, wrap_lora

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_ms(fn: Callable[[], None], repeats: int) -> float:
    """Best wall time of ``fn`` in milliseconds, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * min(times), 2)


def matmul_ms(dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(4096, 256, dtype=dtype), torch.randn(256, 1024, dtype=dtype)
    return best_ms(lambda: a @ b, repeats)


def linear4bit_ms(dtype: torch.dtype, repeats: int) -> float:
    """NF4 256->1024 layer, batch 8x512: forward and backward to its input (as LoRA training does)."""
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(256, 1024, bias=False, compute_dtype=dtype, quant_type="nf4")
    layer.load_state_dict({"weight": torch.randn(1024, 256) / 16})
    layer.weight = bnb.nn.Params4bit(layer.weight.data, requires_grad=False, quant_type="nf4").to("cpu")
    x = torch.randn(8, 512, 256, dtype=dtype, requires_grad=True)

    def step() -> None:
        layer(x).float().sum().backward()

    return best_ms(step, repeats)


def qlora_step_ms(model_path: str, dtype: torch.dtype, batches: list[dict], repeats: int) -> Callable[[], float]:
    """A QLoRA model on ``model_path`` computing in ``dtype``; returns a function timing its steps."""
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, load_in_4bit=True, tokenizer=tokenizer, dtype=dtype)
    model.config.use_cache = False
    model = wrap_lora(model, lora_config(), gradient_checkpointing=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def steps() -> None:
        for batch in batches:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return lambda: round(best_ms(steps, repeats) / len(batches), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--data_path", default="data/sample_train.jsonl")
    parser.add_argument("--steps", type=int, default=8, help="training steps (batches of 8) per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best counts")
    args = parser.parse_args()

    hardware = detect_hardware()
    report: dict = {"hardware": hardware.describe(), "threads": torch.get_num_threads()}
    for name, dtype in DTYPES.items():
        report[f"matmul_4096x256x1024_ms_{name}"] = matmul_ms(dtype, args.repeats)
        report[f"linear4bit_fwd_bwd_ms_{name}"] = linear4bit_ms(dtype, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = model_or_tiny(args.model_path, tmp)
        hidden_size = model_hidden_size(model_path)
        report["auto_choice"] = f"{choose_compute_dtype(hardware, hidden_size)} (model width {hidden_size})"
        tokenizer = load_tokenizer(model_path)
        ds, _, _ = tokenize_rows(load_rows(args.data_path), tokenizer, 1024)
        examples = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds]
        random.Random(0).shuffle(examples)
        collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)
        batches = [collate(examples[i:i + 8]) for i in range(0, 8 * args.steps, 8)]
        timers = {name: qlora_step_ms(model_path, dtype, batches, args.repeats) for name, dtype in DTYPES.items()}
        for name, timer in timers.items():
            report[f"qlora_step_ms_{name}"] = timer()
        fastest = min(DTYPES, key=lambda n: report[f"qlora_step_ms_{n}"])
        threads = {}
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for n in (1, 2):
                    torch.set_num_threads(n)
                    threads[f"{n}_threads_{'beside_busy_process' if busy else 'alone'}"] = timers[fastest]()
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
        report[f"qlora_step_ms_{fastest}_by_threads"] = threads
    for what in ("matmul_4096x256x1024_ms", "linear4bit_fwd_bwd_ms", "qlora_step_ms"):
        report[f"{what.removesuffix('_ms')}_bf16_over_fp32"] = round(report[f"{what}_bf16"] / report[f"{what}_fp32"], 2)
    report["model"] = "tiny (built here)" if args.model_path is None else args.model_path
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
