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
``--peer ours,transformers-serve,llama-server`` runs the same levels against each server in turn, on
the same model: serve.py, ``transformers serve --continuous-batching`` on the same folder, and
llama.cpp's ``llama-server`` (``make llama-server``) on the folder's GGUF export in the same precision,
with as many parallel slots as the other two's batch. Neither peer parses glaive tool calls, and
llama-server refuses the glaive chat template, so every server gets the same /v1/completions requests
(prompt.py's prompt for the question, no tools); each level also reports generated tokens/s, which
counts replies that end early at an end-of-sequence token fairly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from openai import OpenAI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import (  # noqa: E402
    free_port,
    model_or_tiny,
    quantile,
    rss_mib,
    run_together,
    running_process_server,
    running_server,
)

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Perth", "Dakar", "Hanoi", "Bern", "Riga", "Accra"]


def question(number: int) -> list[dict]:
    """The chat of request ``number`` (-1: always the same question, as an agent retrying does)."""
    city = CITIES[number % len(CITIES)] if number >= 0 else "Paris"
    return [{"role": "user", "content": f"What's the weather like in {city} right now? Use celsius."}]


PEERS = ("ours", "transformers-serve", "llama-server")


def run_level(base: str, clients: int, seconds: float, max_tokens: int, tools: list[dict] | None, vary: bool,
              model: str = "m", completions: bool = False) -> dict:
    """``clients`` threads sending chat requests with ``tools`` for ``seconds``; with ``completions``,
    the same questions as prompt.py's prompt text to /v1/completions instead."""
    latencies: list[float] = []
    generated = [0]
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
                if completions:
                    reply = client.completions.create(model=model, prompt=prompt_text(number if vary else -1),
                                                      max_tokens=max_tokens, temperature=0)
                else:
                    reply = client.chat.completions.create(model=model, messages=question(number if vary else -1),
                                                           tools=tools, max_tokens=max_tokens, temperature=0)
            except Exception as err:  # noqa: BLE001 - every failure is counted and its kind reported
                with lock:
                    errors.append(type(err).__name__)
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                generated[0] += reply.usage.completion_tokens if reply.usage else 0

    elapsed = run_together([threading.Thread(target=client_loop, args=(7 * i,)) for i in range(clients)])
    return {"clients": clients, "requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_s": quantile(latencies, 0.5), "p95_s": quantile(latencies, 0.95),
            "generated_tokens_per_s": round(generated[0] / elapsed, 1), "errors": len(errors),
            "error_kinds": sorted(set(errors))}


def prompt_text(number: int) -> str:
    """Request ``number``'s question as the prompt text the model continues (prompt.py, no tools)."""
    from fcmistral.prompt import Turn, build_system_prompt, generation_prompt

    return generation_prompt(build_system_prompt([]), [Turn("user", question(number)[0]["content"])])


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
    engine.close()
    return report


@contextmanager
def peer_server(peer: str, model_path: str, batch: int, tmp: str, args: argparse.Namespace) -> Iterator[tuple]:
    """One of PEERS serving ``model_path`` with ``batch`` requests at once: (process, base URL, model name)."""
    import torch

    from fcmistral.hardware import compute_dtype

    dtype = compute_dtype(args.compute_dtype, model_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    if peer == "ours":
        with running_server(model_path, tmp, "--max_batch_size", str(batch), "--max_new_tokens",
                            str(max(args.max_tokens, 64)), "--compute_dtype", args.compute_dtype,
                            *engine_threads(args)) as (server, url, _):
            yield server, url, "m"
        return
    if peer == "transformers-serve":
        command = [str(Path(sys.executable).parent / "transformers"), "serve", "--continuous-batching", "--host",
                   "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", str(dtype).split(".")[-1],
                   model_path]
        name = model_path
    else:
        from fcmistral.export.gguf import export_gguf

        if not Path(args.llama_server).is_file():
            raise SystemExit(f"error: no llama-server at {args.llama_server}: build it with `make llama-server`")
        outtype = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[dtype]
        gguf = export_gguf(model_path, Path(tmp) / f"model-{outtype}.gguf", outtype)
        command = [args.llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--no-jinja",
                   "-np", str(batch), "-c", str(512 * batch), "-t", str(os.cpu_count())]
        name = "m"
    # /health: transformers serve's /v1/models scans the hub cache (an error where there is none)
    with running_process_server(command, f"http://127.0.0.1:{port}/health", Path(tmp) / f"{peer}.log") as server:
        yield server, base, name


def engine_threads(args: argparse.Namespace) -> tuple[str, ...]:
    """serve.py's ``--engine_threads`` when the benchmark is given one (else the server's default)."""
    return ("--engine_threads", str(args.engine_threads)) if args.engine_threads else ()


def logged_engine_threads(tmp: str) -> str | None:
    """What serve.py's log (written in ``tmp`` by running_server) says of its engine's threads."""
    found = re.search(r"engine threads: .*", (Path(tmp) / "server.log").read_text())
    return found[0] if found else None


def compare_peers(args: argparse.Namespace, levels: list[int], tmp: str) -> dict:
    """Every server of ``--peer`` in turn, the same levels of the same completion requests; one table."""
    model_path = model_or_tiny(args.model_path, tmp)
    report: dict = {"model": model_path, "max_tokens": args.max_tokens, "seconds_per_level": args.seconds,
                    "requests": "/v1/completions, prompt.py's prompt without tools (the peers parse no glaive calls, "
                                "and llama-server refuses the glaive chat template: docs/interop.md)", "peers": {}}
    for peer in args.peer.split(","):
        with peer_server(peer, model_path, max(levels), tmp, args) as (server, base, name):
            run_level(base, 1, min(2.0, args.seconds), args.max_tokens, None, args.vary, name, True)  # warm-up
            rows = []
            for clients in levels:
                rows.append(run_level(base, clients, args.seconds, args.max_tokens, None, args.vary, name, True))
                rows[-1]["server_rss_mib"] = round(rss_mib(server.pid), 1)
                print(json.dumps({"peer": peer, **rows[-1]}), file=sys.stderr, flush=True)
            report["peers"][peer] = rows
            if peer == "ours":
                report["ours_engine_threads"] = logged_engine_threads(tmp)
    lines = ["| server | clients | requests/s | p50 s | p95 s | generated tok/s | errors | RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for peer, rows in report["peers"].items():
        lines += [f"| {peer} | {r['clients']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | "
                  f"{r['generated_tokens_per_s']} | {r['errors']} | {r['server_rss_mib']} |" for r in rows]
    report["table"] = "\n".join(lines)
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
    parser.add_argument("--engine_threads", type=int, default=None,
                        help="serve.py's --engine_threads (default: the server's own choice)")
    parser.add_argument("--peer", default=None,
                        help=f"compare servers on the same completion requests, comma-separated from {', '.join(PEERS)}")
    parser.add_argument("--llama_server", default=str(REPO / "artifacts" / "llama-server"),
                        help="llama.cpp's server binary (make llama-server builds it here)")
    args = parser.parse_args()
    if args.peer and (unknown := set(args.peer.split(",")) - set(PEERS)):
        raise SystemExit(f"error: --peer: unknown {sorted(unknown)}; choose from {', '.join(PEERS)}")

    from fcmistral.demo.functions import DEMO_SCHEMAS

    tools = [{"type": "function", "function": schema} for schema in DEMO_SCHEMAS]
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.peer:
            report = compare_peers(args, levels, tmp)
            print(report["table"], file=sys.stderr)
            print(json.dumps(report, indent=2))
            return
        if args.engine_only:
            model_path = model_or_tiny(args.model_path, tmp)
            print(json.dumps(engine_only(model_path, levels, args.max_tokens, tools, args.constrained), indent=2))
            return
        constrained = ("--constrained_calls", "strict") if args.constrained else ()
        with running_server(args.model_path, tmp, "--max_batch_size", str(max(levels)), "--max_new_tokens",
                            str(max(args.max_tokens, 64)), "--compute_dtype", args.compute_dtype,
                            *engine_threads(args), *constrained) as (server, base, model_path):
            report: dict = {"model": model_path, "max_tokens": args.max_tokens, "seconds_per_level": args.seconds,
                            "questions": "varied" if args.vary else "the same",
                            "server_rss_mib_start": round(rss_mib(server.pid), 1),
                            "engine_threads": logged_engine_threads(tmp), "levels": []}
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
