"""The server under hostile clients and faults (issue 27), against a real ``serve.py``:

    python benchmarks/server_hostile.py [--model_path M] [--fuzz_examples 300] [--clients 64] [--seconds 600]

1. fuzz: schemathesis draws ``--fuzz_examples`` valid and invalid bodies per route from the API's
   OpenAPI schema (not derandomized, unlike the suite's bounded run): server errors, hangs.
2. soak: ``--clients`` threads for ``--seconds``, each a kind of client: good (chat with tools),
   slow (a head that never ends, a body that never comes), disconnecting (plain and streamed, gone
   mid-reply) and hostile (schemas that fetch URLs or backtrack, NaN temperatures, deep nesting,
   text/plain, a foreign Host, 129 tools). Reports the good requests/s and latency, every 5xx and
   hang, what each kind got, and the server's memory at start and end (flat: nothing leaks).
3. chaos: the engine process SIGKILLed, then SIGSTOPped, mid-reply: seconds until /health says so,
   and until a request is served again (``--engine_timeout_s`` is the server's, 5 s here).

The tiny model unless ``--model_path``. Loopback only. Figures from one run; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import engine_pid, quantile, rss_mib, run_together, running_server  # noqa: E402

TOOLS = None  # the demo tools, set in main
HOSTILE_BODIES = [
    ("ref to a URL", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "$ref": "http://169.254.169.254/latest/meta-data/iam"}}}]}),
    ("backtracking pattern", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}}}]}),
    ("ref to itself", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#"}}}]}),
    ("129 tools", {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}),
    ("temperature 1e-300", {"temperature": 1e-300, "max_tokens": 4}),
    ("max_tokens huge", {"max_tokens": 10**9}),
    ("deep arguments", {"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "f", "arguments": "[" * 50_000 + "]" * 50_000}}]}]}),
]


def post(base: str, path: str, body: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def health(base: str) -> int:
    try:
        return urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


def chat(question: str, **extra) -> bytes:
    body = {"messages": [{"role": "user", "content": question}], "tools": TOOLS, "max_tokens": 16, "temperature": 0}
    return json.dumps({**body, **extra}).encode()


def fuzz(base: str, examples: int, derandomize: bool = True) -> int:
    """``examples`` schemathesis requests per route and mode (valid, invalid) against ``base``; the
    number sent. Raises on any 5xx, a request over 30 s, or /health not 200 afterwards."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(base.removesuffix("/v1") + "/openapi.json")
    session, sent = requests.Session(), 0
    for result in schema.get_all_operations():
        operation = result.ok()
        has_body = operation.method.upper() == "POST"  # (a GET without parameters has no invalid form)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_body else (GenerationMode.POSITIVE,):
            @settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                nonlocal sent
                response = case.call(base_url=base.removesuffix("/v1"), session=session, timeout=30)
                sent += 1
                case.validate_response(response, checks=[not_a_server_error])

            run()
    if health(base) != 200:
        raise AssertionError("/health is not 200 after the fuzzing")
    return sent


def soak(base: str, clients: int, seconds: float) -> dict:
    host, port = re.match(r"http://([^:/]+):(\d+)", base).groups()
    deadline = time.monotonic() + seconds
    seen: dict[str, Counter] = {kind: Counter() for kind in ("good", "slow", "disconnecting", "hostile")}
    latencies: list[float] = []
    lock = threading.Lock()

    def note(kind: str, outcome: str) -> None:
        with lock:
            seen[kind][outcome] += 1

    def good(rng: random.Random) -> None:
        start = time.monotonic()
        status, _ = post(base, "/chat/completions", chat(f"Weather in city {rng.randrange(100)}?"))
        note("good", str(status))
        if status == 200:
            with lock:
                latencies.append(time.monotonic() - start)

    def slow(rng: random.Random) -> None:
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            if rng.random() < 0.5:  # a head that never ends
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n")
            else:  # a body that never comes
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 100\r\n\r\n{")
            try:
                answer = sock.recv(100)
                note("slow", answer[9:12].decode() or "closed")
            except socket.timeout:
                note("slow", "hang")

    def disconnecting(rng: random.Random) -> None:
        streamed = rng.random() < 0.5
        body = json.dumps({"prompt": "USER: tell me a story\n\n\nASSISTANT:", "max_tokens": 64, "stream": streamed})
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            if streamed:
                sock.recv(100)
            else:
                time.sleep(rng.uniform(0.01, 0.2))
        note("disconnecting", "streamed" if streamed else "plain")

    def hostile(rng: random.Random) -> None:
        choice = rng.randrange(len(HOSTILE_BODIES) + 2)
        if choice == len(HOSTILE_BODIES):
            status, _ = post(base, "/chat/completions", chat("hi"), {"Content-Type": "text/plain"})
            name = "text/plain"
        elif choice == len(HOSTILE_BODIES) + 1:
            status, _ = post(base, "/chat/completions", chat("hi"), {"Host": "rebound.example"})
            name = "foreign Host"
        else:
            name, extra = HOSTILE_BODIES[choice]
            status, _ = post(base, "/chat/completions", chat("hi", **extra))
        note("hostile", f"{name}: {status}")

    kinds = [good] * int(clients * 0.4) + [slow] * int(clients * 0.15) + [disconnecting] * int(clients * 0.15)
    kinds += [hostile] * (clients - len(kinds))

    def loop(index: int, kind) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline:
            try:
                kind(rng)
            except Exception as err:  # noqa: BLE001 - every failure is counted by kind
                note(kind.__name__, f"client error {type(err).__name__}")

    elapsed = run_together([threading.Thread(target=loop, args=(i, kind), daemon=True) for i, kind in enumerate(kinds)])
    server_errors = sum(n for counter in seen.values() for outcome, n in counter.items()
                        if re.search(r"(^|: )5\d\d$", outcome))
    return {"clients": {k.__name__: kinds.count(k) for k in (good, slow, disconnecting, hostile)},
            "seconds": round(elapsed), "good_requests_per_s": round(seen["good"]["200"] / elapsed, 2),
            "good_p50_s": quantile(latencies, 0.5), "good_p95_s": quantile(latencies, 0.95), "server_errors_5xx": server_errors,
            "outcomes": {kind: dict(counter.most_common()) for kind, counter in seen.items()}}


def chaos(base: str, server_pid: int, how: signal.Signals) -> dict:
    """Signal the engine while a streamed reply is being generated: seconds until /health is 503,
    until the stream ended with its error event, and until a request is served again."""
    events: list[str] = []
    body = json.dumps({"prompt": "USER: tell me a story\n\n\nASSISTANT:", "max_tokens": 400, "stream": True,
                       "temperature": 0}).encode()

    def stream() -> None:
        request = urllib.request.Request(base + "/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            for line in response:
                if line.strip():
                    events.append(line.decode().strip())

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    while not any(e.startswith("data: {") for e in events):
        time.sleep(0.01)
    start = time.monotonic()
    os.kill(engine_pid(server_pid), how)
    while health(base) == 200:
        time.sleep(0.05)
    detected = time.monotonic() - start
    thread.join(300)
    ended = time.monotonic() - start
    while post(base, "/completions", b'{"prompt": "USER: hi\\n\\n\\nASSISTANT:", "max_tokens": 2}')[0] != 200:
        time.sleep(0.1)
    return {"signal": how.name, "health_503_after_s": round(detected, 2), "stream_ended_after_s": round(ended, 2),
            "stream_ended_with_error_event": any('"error"' in e for e in events) and events[-1] == "data: [DONE]"
            if events else False, "served_again_after_s": round(time.monotonic() - start, 2)}


def main() -> None:
    global TOOLS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="model folder (default: build the tiny model)")
    parser.add_argument("--fuzz_examples", type=int, default=300, help="schemathesis examples per route and mode")
    parser.add_argument("--clients", type=int, default=64, help="soak clients")
    parser.add_argument("--seconds", type=float, default=600, help="soak duration")
    args = parser.parse_args()
    from fcmistral.demo.functions import DEMO_SCHEMAS

    TOOLS = [{"type": "function", "function": schema} for schema in DEMO_SCHEMAS]
    with tempfile.TemporaryDirectory() as tmp:
        with running_server(args.model_path, tmp, "--engine_timeout_s", "5") as (server, base, model_path):
            report: dict = {"model": model_path, "server_rss_mib_start": round(rss_mib(server.pid), 1)}
            start = time.monotonic()
            report["fuzz"] = {"requests": fuzz(base, args.fuzz_examples, derandomize=False),
                              "seconds": round(time.monotonic() - start), "server_errors": 0}
            print(json.dumps(report["fuzz"]), file=sys.stderr, flush=True)
            report["soak"] = soak(base, args.clients, args.seconds)
            report["health_after_soak"] = health(base)
            report["server_rss_mib_end"] = round(rss_mib(server.pid), 1)
            print(json.dumps(report["soak"]), file=sys.stderr, flush=True)
            report["chaos"] = [chaos(base, server.pid, how) for how in (signal.SIGKILL, signal.SIGSTOP)]
    import torch

    report["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
