"""Prefill and decode-step times with plain linear layers, oneDNN-prepacked ones (fcmistral.prepacked),
and prepacked ones under the direct decode step (fcmistral.decode_step), as the serving engine runs them.

    python benchmarks/decode_step.py [--model_path artifacts/smollm2-135m] [--rounds 5]

Two copies of the model in bf16 (the dtype prepacking applies to), measured in turns within one run
(round 1 plain, prepacked, direct; round 2 ...), so the machine's noise falls on all: a prompt of
``--prompt_tokens`` for 1 and 8 rows, then ``--steps`` decode steps of those rows with their KV cache
in the engine's slots and the engine's step mask. Prints the median of the rounds per case, the
ratios to plain, and whether the logits agree to the bit (the prompt's: plain and prepacked; every
step's: prepacked forward and direct step); then where a direct step's time goes, with 1 row (one
client of the server) and with 8 (the products, attention, the other operators, and the Python
between them: torch.profiler's own time of each operator against the steps' wall time). And how
near the products are to the machine's limit: a decode step reads every weight once (270 MB for
SmolLM2 in bf16), so the floor of a step is the weights' bytes at the rate this machine reads memory
(torch summing a float32 buffer of that size, measured in the same run); the report gives that floor
and the rate the products reach. Refuses to run where prepacking does not apply (no native bf16 on
this CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time

import torch
from common import model_or_tiny
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache

from fcmistral.decode_step import DecodeStep
from fcmistral.generation import load_for_generation
from fcmistral.prepacked import can_prepack
from fcmistral.serving.engine.slots import slot_cache


@torch.inference_mode()
def timed(model, ids: torch.Tensor, steps: int, direct: DecodeStep | None = None,
          steps_within: contextlib.AbstractContextManager | None = None
          ) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(prefill seconds, seconds per decode step, the prompt's last logits, every step's logits);
    the steps with ``direct`` when given, else with the model's forward, and inside ``steps_within``
    when given (a profiler). Each step's token is the engine's greedy choice, timed with the step."""
    cache = DynamicCache()
    start = time.perf_counter()
    logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    prefill = time.perf_counter() - start
    slots = slot_cache(cache)
    rows, width = ids.shape
    mask, position = torch.ones(rows, width, dtype=torch.long), torch.full((rows, 1), width - 1)
    prompt_logits, step_logits = logits.float(), []
    with steps_within or contextlib.nullcontext():
        start = time.perf_counter()
        for _ in range(steps):
            token = logits.max(dim=-1, keepdim=True).indices  # the engine's greedy choice (serving.engine.rows)
            mask, position = torch.nn.functional.pad(mask, (0, 1), value=1), position + 1
            own_mask = mask.bool()[:, None, None, :]  # the engine's step mask (serving.engine.scheduler)
            logits = direct(token, position, own_mask, slots) if direct else model(
                input_ids=token, attention_mask=own_mask, position_ids=position, past_key_values=slots,
                use_cache=True).logits[:, -1]
            step_logits.append(logits)
        step = (time.perf_counter() - start) / steps
    return prefill, step, prompt_logits, torch.stack(step_logits)


# Where a step's time goes: torch.profiler's operators by group (the rest of their own time is
# "other operators"; the steps' wall time less every operator's own time is the Python between them).
STEP_PARTS = {"products": ("mkldnn::_linear_pointwise",),
              "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",)}


def figure(value: float) -> float:
    """``value`` to 4 significant digits: a rate or time of the tiny model is far below one of SmolLM2,
    and a fixed number of decimals printed one as 0.0 (a slow first step under a busy machine)."""
    return float(f"{value:.4g}")


def weight_bytes(model) -> int:
    """The bytes a decode step reads from the weights: every parameter once (a tied output layer
    and embedding are one parameter, and the embedding is read a row per token)."""
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def read_rate(nbytes: int, rounds: int = 5) -> float:
    """Bytes per second this machine reads ``nbytes`` of memory at, with torch's own kernels (a sum
    of a float32 buffer that size; the median of ``rounds``): the rate no step can beat."""
    buffer = torch.ones(nbytes // 4, dtype=torch.float32)
    seconds = []
    for _ in range(rounds + 1):  # the first one warms up (not counted)
        start = time.perf_counter()
        buffer.sum()
        seconds.append(time.perf_counter() - start)
    return nbytes / statistics.median(seconds[1:])


def step_breakdown(model, direct: DecodeStep, ids: torch.Tensor, steps: int, nbytes: int) -> dict:
    """The share of each part of ``steps`` direct decode steps of ``ids``' rows (see STEP_PARTS),
    the steps as ``timed`` runs them, and the rate the products read the weights' ``nbytes`` at."""
    profiler = profile(activities=[ProfilerActivity.CPU])  # around the steps only, not the prefill
    _, step, _, _ = timed(model, ids, steps, direct, steps_within=profiler)
    wall = step * steps
    own = {event.key: event.self_cpu_time_total / 1e6 for event in profiler.key_averages()}
    parts = {name: sum(own.get(op, 0.0) for op in ops) for name, ops in STEP_PARTS.items()}
    parts["other_operators"] = sum(own.values()) - sum(parts.values())
    parts["python_between"] = max(wall - sum(own.values()), 0.0)
    products = parts["products"] / steps
    return {"step_ms_profiled": round(1e3 * step, 2), "products_ms": figure(1e3 * products),
            "products_read_gb_s": figure(nbytes / products / 1e9)} | {
        f"{name}_share": round(seconds / wall, 3) for name, seconds in parts.items()}


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
        direct = DecodeStep.for_model(prepacked)
        if direct is None:
            raise SystemExit("error: the direct decode step does not apply to this model (fcmistral/decode_step.py)")
        text = "What's the weather like in Paris today, and what should I wear for a walk? " * 40
        prompt = tokenizer(text, return_tensors="pt").input_ids[:, :args.prompt_tokens]
        times: dict[str, list[float]] = {}
        agree = direct_agrees = True
        for _ in range(args.rounds):
            for rows in (1, 8):
                ids = prompt.repeat(rows, 1)
                results = {name: timed(model, ids, args.steps, step) for name, model, step in
                           (("plain", plain, None), ("prepacked", prepacked, None), ("direct", prepacked, direct))}
                agree &= torch.equal(results["plain"][2], results["prepacked"][2])
                direct_agrees &= torch.equal(results["prepacked"][3], results["direct"][3])
                for name, (prefill, step, _, _) in results.items():
                    if name != "direct":  # its prompt is the prepacked model's forward
                        times.setdefault(f"prefill_{rows}_{name}", []).append(prefill)
                    times.setdefault(f"step_{rows}_{name}", []).append(step)
        nbytes = weight_bytes(plain)
        breakdowns = {rows: step_breakdown(prepacked, direct, prompt.repeat(rows, 1), args.steps, nbytes)
                      for rows in (1, 8)}
        rate = read_rate(nbytes)
    report = {"model": args.model_path or "tiny", "threads": torch.get_num_threads(), "rounds": args.rounds,
              "prompt_tokens": prompt.shape[1], "logits_identical": agree, "direct_step_logits_identical": direct_agrees,
              "weights_mb": figure(nbytes / 1e6), "memory_read_gb_s": figure(rate / 1e9),
              "step_floor_ms": figure(1e3 * nbytes / rate)}
    for case in ("prefill_1", "prefill_8", "step_1", "step_8"):
        names = ("plain", "prepacked", "direct") if case.startswith("step") else ("plain", "prepacked")
        ms = {name: 1e3 * statistics.median(times[f"{case}_{name}"]) for name in names}
        report[case] = {f"{name}_ms": round(value, 2) for name, value in ms.items()}
        report[case] |= {f"{name}_ratio": round(ms[name] / ms["plain"], 2) for name in names[1:]}
    for rows, breakdown in breakdowns.items():
        report[f"step_{rows}_direct_breakdown"] = breakdown
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
