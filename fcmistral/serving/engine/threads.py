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
decode step of one row with all cores but one, and takes all cores when that step is long
(``MIN_STEP_S``): then it is mostly matrix products, which the cores share, and the HTTP process's
work beside it is small. Why not time all cores as well and compare: the machine is shared and
noisy, and the comparison of two ~40 ms steps was not (SmolLM2 at load, in the server: 2 threads
took 0.65-0.88 of 1 thread's time in six starts, 0.96 and 1.21 in two others, which then kept 1
thread and served one client 0.88x and 0.81x as fast as `transformers serve`). Step times of the two models are 20 times apart (tiny 1.5-2.4 ms,
SmolLM2 46-73 ms with one thread), so the threshold does not sit on noise.
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

MIN_STEP_S = 0.01
PROMPT_TOKENS = 16
STEPS = 4  # timed steps (the least is kept: noise only adds)


def decode_step_s(model, threads: int, steps: int = STEPS) -> float:
    """The least time of ``steps`` decode steps of one row (after a short prompt) with ``threads`` threads."""
    torch.set_num_threads(threads)
    ids = torch.ones(1, PROMPT_TOKENS, dtype=torch.long, device=model.device)
    times = []
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)  # warm-up
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - start)
    return min(times)


def engine_threads(model, cores: int, given: int | None = None) -> str:
    """Set torch to ``given`` threads (``--engine_threads``), or to all ``cores`` when the model's
    decode step with all but one is long, else to all but one (the module's docstring). Call it in
    the thread that will run the model. Returns the choice and why, for the log."""
    fewer = max(1, cores - 1)
    if given:
        choice, why = given, "--engine_threads"
    elif cores == 1 or model.device.type != "cpu":  # on a GPU the threads only feed it: leave the core to HTTP
        choice, why = fewer, f"the model runs on {model.device.type}"
    else:
        step = decode_step_s(model, fewer)
        choice = cores if step >= MIN_STEP_S else fewer
        why = f"a decode step took {step * 1000:.1f} ms with {fewer}; all cores from {MIN_STEP_S * 1000:.0f} ms"
    torch.set_num_threads(choice)
    return f"engine threads: {choice} of {cores} cores ({why})"
