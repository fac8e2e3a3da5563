"""Load on the OpenAI-compatible server: requests/s and latency at several numbers of concurrent
clients, errors, and the server's memory as requests accumulate.

    python benchmarks/server_load.py [--model_path M] [--clients 1,8,32,64] [--seconds 20]
    python benchmarks/server_load.py --engine_only [--clients 1,8,32]    # the batching engine, no HTTP
    python benchmarks/server_load.py --clients 1,8 --constrained         # each level plain, then constrained

Starts ``serve.py`` (the tiny model unless ``--model_path``) on a free port, then for
each level runs that many clients (threads, each with its own official ``openai`` client, no
retries) sending chat requests with tools for ``--seconds``. Prints per level: requests/s, p50 and
p95 latency, errors; the speed-up of each level over one client; and the server's resident memory
after each level (flat means no leak). Figures are measured in one run, so ratios are comparable.
``--engine_only`` sends the same requests straight to the batching engine in batches of each level's
size, in this process: what generation alone allows, without HTTP, validation or clients.
``--constrained`` runs each level twice in the same server (``--constrained_calls strict``): its tools
as given, then marked ``"strict": true``, so every request of the second run is generated under the
call grammar (the same prompts: the flag is not shown to the model); it reports the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from openai import OpenAI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import quantile, rss_mib, run_together, running_server  # noqa: E402

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Perth", "Dakar", "Hanoi", "Bern", "Riga", "Accra"]


def question(number: int) -> list[dict]:
    """The chat of request ``number`` (-1: always the same question, as an agent retrying does)."""
    city = CITIES[number % len(CITIES)] if number >= 0 else "Paris"
    return [{"role": "user", "content": f"What's the weather like in {city} right now? Use celsius."}]


def run_level(base: str, clients: int, seconds: float, max_tokens: int, tools: list[dict], vary: bool) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(first: int) -> None:
        client = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
        number = first
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            number += 1
            try:
                client.chat.completions.create(model="m", messages=question(number if vary else -1), tools=tools,
                                               max_tokens=max_tokens, temperature=0)
            except Exception as err:  # noqa: BLE001 - every failure is counted and its kind reported
                with lock:
                    errors.append(type(err).__name__)
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    elapsed = run_together([threading.Thread(target=client_loop, args=(7 * i,)) for i in range(clients)])
    return {"clients": clients, "requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_s": quantile(latencies, 0.5), "p95_s": quantile(latencies, 0.95), "errors": len(errors), "error_kinds": sorted(set(errors))}


def strict(tools: list[dict]) -> list[dict]:
    return [{**tool, "function": {**tool["function"], "strict": True}} for tool in tools]


def engine_only(model_path: str, levels: list[int], max_tokens: int, tools: list[dict], constrained: bool) -> dict:
    import asyncio

    from fcmistral.constraint import CallConstraint
    from fcmistral.format.grammar import call_grammar
    from fcmistral.generation import load_for_generation
    from fcmistral.prompt import Turn, build_system_prompt, generation_prompt
    from fcmistral.serving.engine import BatchingEngine, GenerationRequest

    model, tokenizer = load_for_generation(model_path)
    engine = BatchingEngine(model, tokenizer, max(levels))
    prompt = generation_prompt(build_system_prompt([t["function"] for t in tools]),
                               [Turn("user", question(-1)[0]["content"])])

    grammar = CallConstraint(call_grammar([t["function"] for t in tools]))

    async def batches(size: int, repeats: int, constraint: CallConstraint | None = None) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            await asyncio.gather(*[engine.generate(GenerationRequest(prompt, max_tokens, constraint=constraint))
                                   for _ in range(size)])
        return (time.perf_counter() - start) / repeats

    asyncio.run(batches(1, 2, grammar if constrained else None))  # warm-up (and the grammar compiled)
    report = {"model": model_path, "prompt_tokens": len(tokenizer(prompt).input_ids),
              "engine_requests_per_s": {str(size): round(size / asyncio.run(batches(size, 5)), 1) for size in levels}}
    if constrained:
        report["engine_requests_per_s_constrained"] = {str(size): round(size / asyncio.run(batches(size, 5, grammar)), 1)
                                                       for size in levels}
        report["constrained_over_plain"] = {k: round(v / report["engine_requests_per_s"][k], 2)
                                            for k, v in report["engine_requests_per_s_constrained"].items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--clients", default="1,8,32,64", help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=20, help="duration of each level")
    parser.add_argument("--max_tokens", type=int, default=16, help="max_tokens of each request")
    parser.add_argument("--vary", action="store_true",
                        help="each request asks about another city (default: the same question every time, whose "
                             "prompt the server's prefix cache then holds whole)")
    parser.add_argument("--engine_only", action="store_true", help="measure the batching engine alone (no HTTP)")
    parser.add_argument("--constrained", action="store_true",
                        help="run each level again with every request under the call grammar; report the ratio")
    parser.add_argument("--compute_dtype", default="auto", help="the server's --compute_dtype (auto: the hardware's "
                                                                  "choice for the model)")
    args = parser.parse_args()

    from fcmistral.demo.functions import DEMO_SCHEMAS

    tools = [{"type": "function", "function": schema} for schema in DEMO_SCHEMAS]
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.engine_only:
            model_path = args.model_path
            if model_path is None:
                from fcmistral.demo.tiny import build_tiny_model

                model_path = str(build_tiny_model(f"{tmp}/tiny"))
            print(json.dumps(engine_only(model_path, levels, args.max_tokens, tools, args.constrained), indent=2))
            return
        constrained = ("--constrained_calls", "strict") if args.constrained else ()
        with running_server(args.model_path, tmp, "--max_batch_size", str(max(levels)), "--max_new_tokens",
                            str(max(args.max_tokens, 64)), "--compute_dtype", args.compute_dtype,
                            *constrained) as (server, base, model_path):
            report: dict = {"model": model_path, "max_tokens": args.max_tokens, "seconds_per_level": args.seconds,
                            "questions": "varied" if args.vary else "the same",
                            "server_rss_mib_start": round(rss_mib(server.pid), 1), "levels": []}
            total = 0
            for clients in levels:
                level = run_level(base, clients, args.seconds, args.max_tokens, tools, args.vary)
                total += level["requests"]
                if args.constrained:
                    again = run_level(base, clients, args.seconds, args.max_tokens, strict(tools), args.vary)
                    total += again["requests"]
                    level["constrained"] = {k: again[k] for k in ("requests", "requests_per_s", "p50_s", "p95_s",
                                                                  "errors")}
                    level["constrained_over_plain"] = round(again["requests_per_s"] / level["requests_per_s"], 2)
                level["server_rss_mib_after"] = round(rss_mib(server.pid), 1)
                level["requests_so_far"] = total
                report["levels"].append(level)
                print(json.dumps(level), file=sys.stderr, flush=True)
    one = report["levels"][0]["requests_per_s"] if levels[0] == 1 else None
    if one:
        report["speedup_over_one_client"] = {str(lv["clients"]): round(lv["requests_per_s"] / one, 2)
                                             for lv in report["levels"]}
    import torch

    report["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
