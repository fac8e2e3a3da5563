"""How many torch threads the engine process runs: measured on the model at hand, on this machine.

The engine shares the machine's cores with the HTTP process (tokenizing, JSON, the replies). Torch's
threads wait for work by spinning, so a pool as wide as the machine takes the core the HTTP process
needs; whether that costs more than it gains depends on the model:

- a small model's decode step is short (the tiny model's: 2-3 ms), and between two steps the HTTP
  process has about as much to do for each row: on 2 cores with 8 clients the tiny model got 106-162
  requests/s with 1 engine thread against 80-110 with 2, though alone its step is 20-25% faster
  with 2 (OMP_WAIT_POLICY=PASSIVE, threads that sleep instead of spinning: 51-55);
- a larger model's step is long and mostly matrix products, which the second thread speeds up:
  SmolLM2-135M's step took 32-40 ms with 2 threads against 46-57 with 1, and one client got
  1.63-1.71 requests/s against 1.16-1.36 (8 clients: 7.65 against 6.92).

(2-core AMD EPYC Zen 4, bf16 for SmolLM2, fp32 for the tiny model, 2026-12-03, `python
benchmarks/server_load.py --peer ours --clients 1,8 --engine_threads N`.) So the engine times a
decode step of one row with all cores and with all but one, in turns (the least of each: the
machine may be shared and noisy), and takes all cores only when the step is long enough for the
HTTP process's work beside it to be small (``MIN_STEP_S`` with all but one) and all cores make it
clearly faster (``FASTER``). A step slower than ``SLOW_STEP_S`` with all but one core is matrix
products without doubt (a 7B model): all cores, without timing them.
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

FASTER = 0.9  # all cores must take at most this fraction of the step time of all but one (SmolLM2: 0.69-0.77)
MIN_STEP_S = 0.01
SLOW_STEP_S = 0.25
PROMPT_TOKENS = 16
ROUNDS = 4  # timed steps per thread count, in turns


def decode_steps_s(model, thread_counts: tuple[int, ...], rounds: int = ROUNDS) -> dict[int, float]:
    """The least time of a decode step of one row (after a short prompt) with each thread count,
    timed in turns; stops after the first round when the first count's step takes ``SLOW_STEP_S``."""
    ids = torch.ones(1, PROMPT_TOKENS, dtype=torch.long, device=model.device)
    best = dict.fromkeys(thread_counts, float("inf"))
    with torch.inference_mode():
        cache = DynamicCache()
        torch.set_num_threads(thread_counts[0])
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)  # warm-up
        for _ in range(rounds):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                start = time.perf_counter()
                model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
                best[threads] = min(best[threads], time.perf_counter() - start)
                if best[thread_counts[0]] >= SLOW_STEP_S:
                    return best
    return best


def engine_threads(model, cores: int) -> str:
    """Set torch to all ``cores`` when the model's decode step is long and clearly faster with them
    than with all but one, else to all but one (the module's docstring). Call it in the thread that
    will run the model. Returns the choice and why, for the log."""
    fewer = max(1, cores - 1)
    if cores == 1 or model.device.type != "cpu":  # on a GPU the threads only feed it: leave the core to HTTP
        choice, why = fewer, f"the model runs on {model.device.type}"
    else:
        steps = decode_steps_s(model, (fewer, cores))
        if steps[fewer] >= SLOW_STEP_S:
            choice, why = cores, f"a decode step takes {steps[fewer] * 1000:.0f} ms with {fewer}"
        else:
            fast = steps[fewer] >= MIN_STEP_S and steps[cores] <= FASTER * steps[fewer]
            choice = cores if fast else fewer
            why = (f"a decode step took {steps[cores] * 1000:.1f} ms with {cores}, "
                   f"{steps[fewer] * 1000:.1f} ms with {fewer}")
    torch.set_num_threads(choice)
    return f"engine threads: {choice} of {cores} cores ({why})"
