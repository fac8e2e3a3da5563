"""How many torch threads the engine process runs: measured on the model at hand, on this machine.

The engine shares the machine's cores with the HTTP process (tokenizing, JSON, the replies). Torch's
threads wait for work by spinning, so a pool as wide as the machine takes the core the HTTP process
needs; whether that costs more than it gains depends on the model:

- a narrow model's decode step is mostly Python between small kernels, which a second thread does
  not speed up: the tiny model behind serve.py on 2 cores, 8 clients, got 106-162 requests/s with 1
  engine thread against 80-110 with 2 (OMP_WAIT_POLICY=PASSIVE, threads that sleep instead of
  spinning: 51-55);
- a wider model's step is mostly matrix products, which the second thread does speed up:
  SmolLM2-135M's step took 40 ms with 2 threads against 54-57 with 1, and one client got 1.67-1.71
  requests/s against 1.16-1.36 (8 clients: 7.65 against 6.92).

(2-core AMD EPYC Zen 4, bf16 for SmolLM2, fp32 for the tiny model, 2026-12-03, `python
benchmarks/server_load.py --peer ours --clients 1,8 --engine_threads N`.) So the engine times one
decode step of one row with all cores and with all but one, and takes all cores only when they make
the step clearly faster (``FASTER``). A step slower than ``SLOW_STEP_S`` with all but one core is
matrix products without doubt (a 7B model): all cores, without timing the other.
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

FASTER = 0.8  # all cores must take at most this fraction of the step time of all but one
SLOW_STEP_S = 0.25
PROMPT_TOKENS = 16
STEPS = 3  # timed steps per thread count (the least is kept: the machine is shared and noisy)


def decode_step_s(model, threads: int, steps: int = STEPS) -> float:
    """The least time of ``steps`` decode steps of one row (after a short prompt) with ``threads`` threads."""
    torch.set_num_threads(threads)
    ids = torch.ones(1, PROMPT_TOKENS, dtype=torch.long, device=model.device)
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)  # warm-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - start)
    return min(times)


def engine_threads(model, cores: int) -> str:
    """Set torch to all ``cores`` when they make the model's decode step clearly faster than all but
    one, else to all but one (the module's docstring); returns the choice and why, for the log."""
    fewer = max(1, cores - 1)
    if cores == 1 or model.device.type != "cpu":  # on a GPU the threads only feed it: leave the core to HTTP
        choice, why = fewer, f"the model runs on {model.device.type}"
    elif (with_fewer := decode_step_s(model, fewer)) >= SLOW_STEP_S:
        choice, why = cores, f"a decode step takes {with_fewer * 1000:.0f} ms with {fewer}"
    else:
        with_all = decode_step_s(model, cores)
        choice = cores if with_all <= FASTER * with_fewer else fewer
        why = f"a decode step took {with_all * 1000:.1f} ms with {cores}, {with_fewer * 1000:.1f} ms with {fewer}"
    torch.set_num_threads(choice)
    return f"engine threads: {choice} of {cores} cores ({why})"
