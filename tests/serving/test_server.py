"""The OpenAI-compatible server with the official ``openai`` client: every tool_choice, streaming
reassembled equal to the plain reply, parameters, checked calls, batching, and each bad request's
4xx. The model is scripted (replies written in advance, one character per token) behind the real
batching engine, uvicorn and FastAPI app; the tiny model serves end to end in the last tests (the engine alone: test_engine.py)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

import pytest
import torch

from fcmistral.prompt import ASSISTANT_TAG, END_OF_TURN, format_call
from fcmistral.serving.limits import Limits
from tests.serving.scripted import TOOLS, held_together, rows_submitted, wait_until, weather

openai = pytest.importorskip("openai")


def ask(client, content: str, stream: bool = False, **options):
    return client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": content}],
                                          stream=stream, **options)


def reassemble(chunks) -> dict:
    """A streamed reply put back together as the client libraries of agent frameworks do."""
    content, calls, finish, usage = "", {}, None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    assert entry["id"] is None, "a call's id and name come once, in its first chunk"
                    entry.update(id=call.id, name=call.function.name)
                entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"content": content or None, "calls": [calls[i] for i in sorted(calls)], "finish": finish, "usage": usage}


def plain(reply) -> dict:
    message = reply.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
    return {"content": message.content or None, "calls": calls, "finish": reply.choices[0].finish_reason,
            "usage": reply.usage}


def same(a: dict, b: dict) -> None:
    """Equal replies apart from the calls' random ids."""
    strip = lambda r: {**r, "calls": [{k: v for k, v in c.items() if k != "id"} for c in r["calls"]]}  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.parametrize(
    "content, tool_choice, expected",
    [
        ("Weather?", "auto", {"content": "It is 18 degrees in Paris.", "calls": [], "finish": "stop"}),
        ("call " + weather(), "auto", {"content": None, "finish": "tool_calls",
                                       "calls": [("get_current_weather", {"location": "Paris", "unit": "celsius"})]}),
        ("acknowledge first", "auto", {"content": "Let me check.", "finish": "tool_calls",
                                       "calls": [("get_current_weather", {"location": "Paris", "unit": "celsius"})]}),
        ("parallel", "auto", {"content": None, "finish": "tool_calls",
                              "calls": [("get_current_weather", {"location": "Paris", "unit": "celsius"}),
                                        ("get_current_weather", {"location": "Rome", "unit": "celsius"})]}),
        ("call " + weather(), "none", {"content": None, "calls": [], "finish": "stop"}),  # stopped at the marker
        ("Weather?", "required", {"content": None, "finish": "tool_calls",
                                  "calls": [("get_current_weather", {"location": "Oslo", "unit": "celsius"})]}),
        ("Weather?", {"type": "function", "function": {"name": "get_current_weather"}},
         {"content": None, "finish": "tool_calls",
          "calls": [("get_current_weather", {"location": "Oslo", "unit": "celsius"})]}),
    ],
)
def test_tool_choice_streamed_and_plain(serve, content, tool_choice, expected):
    client, model, _ = serve()
    full = plain(ask(client, content, tools=TOOLS, tool_choice=tool_choice))
    streamed = reassemble(ask(client, content, stream=True, tools=TOOLS, tool_choice=tool_choice,
                              stream_options={"include_usage": True}))
    same(full, streamed)
    assert (full["content"], full["finish"]) == (expected["content"], expected["finish"])
    assert [(c["name"], json.loads(c["arguments"])) for c in full["calls"]] == expected["calls"]
    assert full["usage"].completion_tokens > 0 and full["usage"].prompt_tokens > 0
    assert full["usage"].total_tokens == full["usage"].prompt_tokens + full["usage"].completion_tokens
    if tool_choice == "none":
        assert "no access to external functions" in model.prompts[0]  # the no-functions system prompt
    if tool_choice == "required":
        assert model.prompts[0].endswith('ASSISTANT: <functioncall> {"name": "')
    if isinstance(tool_choice, dict):
        assert model.prompts[0].endswith('ASSISTANT: <functioncall> {"name": "get_current_weather", "arguments": \'')


def test_parallel_calls_sent_back_are_one_turn_with_a_response_each(serve):
    """A client returns a parallel reply's two tool_calls and two results: the model reads one call
    turn (the calls on their own lines, as it writes them) and then both FUNCTION RESPONSE turns."""
    client, model, _ = serve()
    first = client.chat.completions.create(model="scripted", tools=TOOLS, messages=[
        {"role": "user", "content": "parallel"}]).choices[0].message
    assert len(first.tool_calls) == 2
    messages = [{"role": "user", "content": "parallel"}, first.model_dump(exclude_none=True),
                *({"role": "tool", "tool_call_id": c.id, "content": f'{{"n": {i}}}'} for i, c in enumerate(first.tool_calls))]
    client.chat.completions.create(model="scripted", tools=TOOLS, messages=messages)
    calls = "\n".join(c.function.arguments and weather(**json.loads(c.function.arguments)) for c in first.tool_calls)
    assert model.prompts[-1].endswith(f"ASSISTANT: {calls} <|endoftext|>\n\n\nFUNCTION RESPONSE: {{\"n\": 0}}\n\n\n"
                                      'FUNCTION RESPONSE: {"n": 1}\n\n\nASSISTANT:')


def test_text_streams_as_generated_and_markers_never_leak(serve):
    client, _, _ = serve()
    pieces = [c.choices[0].delta.content for c in ask(client, "Weather?", stream=True) if c.choices]
    texts = [p for p in pieces if p]
    assert len(texts) > 5  # deltas, not one block
    assert "".join(texts) == "It is 18 degrees in Paris."
    assert not any(marker in "".join(texts) for marker in ("<|endoftext|>", "USER:", "<functioncall>"))


@pytest.mark.parametrize(
    "bad_call, why",
    [
        (format_call("rm_rf", {"path": "/"}), "not offered"),
        (weather(location="Paris", unit="kelvin"), "fails the schema (enum)"),
        ('<functioncall> {"name": "get_current_weather", "arguments": \'{"location": NaN}\'}', "NaN"),
        ('<functioncall> {"name": "get_current_weather", "arguments": \'{"loc', "unreadable"),
    ],
)
def test_unusable_calls_are_retried_once_with_the_error(serve, bad_call, why):
    client, model, _ = serve()
    reply = plain(ask(client, "call " + bad_call, tools=TOOLS))
    assert reply["finish"] == "tool_calls", why
    assert [(c["name"], json.loads(c["arguments"])) for c in reply["calls"]] == [
        ("get_current_weather", {"location": "Rome", "unit": "celsius"})]
    retry_prompt = model.prompts[-1]
    assert retry_prompt.count("FUNCTION RESPONSE: {\"error\": ") == 1


def test_a_call_unusable_twice_comes_back_as_text(serve):
    bad = format_call("rm_rf", {"path": "/"})
    client, _, _ = serve(reply=lambda prompt: " " + bad + " " + END_OF_TURN)
    for stream in (False, True):
        answer = ask(client, "x", stream=stream, tools=TOOLS)
        reply = reassemble(answer) if stream else plain(answer)
        assert (reply["content"], reply["calls"], reply["finish"]) == (bad, [], "stop")


def test_no_tools_means_no_calls(serve):
    client, model, _ = serve()
    reply = plain(ask(client, "call " + weather()))
    assert reply["calls"] == [] and reply["finish"] == "stop"
    assert "no access to external functions" in model.prompts[0]


def test_parameters_are_honoured(serve):
    client, model, _ = serve()
    cut = plain(ask(client, "Weather?", max_tokens=6))
    assert (cut["content"], cut["finish"], cut["usage"].completion_tokens) == ("It is", "length", 6)
    cut_call = plain(ask(client, "call " + weather(), tools=TOOLS, max_completion_tokens=20))
    assert cut_call["finish"] == "length" and cut_call["calls"] == [] and "<functioncall>" in cut_call["content"]
    stopped = plain(ask(client, "Weather?", stop=["18"]))
    assert (stopped["content"], stopped["finish"]) == ("It is", "stop")
    first = plain(ask(client, "Weather?", temperature=1.5, seed=7, top_p=0.9))
    again = plain(ask(client, "Weather?", temperature=1.5, seed=7, top_p=0.9))
    other = [plain(ask(client, "Weather?", temperature=1.5, seed=s))["content"] for s in range(8, 12)]
    assert first["content"] == again["content"] and any(o != first["content"] for o in other)
    assert first["content"] != "It is 18 degrees in Paris."  # sampled, not greedy
    narrow = plain(ask(client, "Weather?", temperature=1.5, top_p=0.001, seed=3))  # top-p: the likeliest only
    assert narrow["content"] == "It is 18 degrees in Paris."
    greedy = plain(ask(client, "Weather?", temperature=0))
    assert greedy["content"] == "It is 18 degrees in Paris."


def test_completions_endpoint(serve):
    client, _, _ = serve()
    done = client.completions.create(model="scripted", prompt="USER: Weather?\n\n\nASSISTANT:", max_tokens=50)
    assert done.choices[0].text == " It is 18 degrees in Paris. \n" and done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens > 0
    streamed = client.completions.create(model="scripted", prompt="USER: Weather?\n\n\nASSISTANT:", max_tokens=8,
                                         stream=True)
    pieces = [c.choices[0] for c in streamed]
    assert "".join(p.text for p in pieces) == " It is 1" and pieces[-1].finish_reason == "length"


def test_requests_that_arrive_together_are_generated_together(serve):
    client, model, _ = serve()
    assert plain(ask(client, "Weather?"))["content"] == "It is 18 degrees in Paris."
    alone = len(model.batches)  # forward passes for one request
    model.batches.clear()
    held_together(model, 8)
    results = []
    threads = [threading.Thread(target=lambda: results.append(plain(ask(client, "Weather?")))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r["content"] == "It is 18 degrees in Paris." for r in results)
    assert max(len(b) for b in model.batches) > 1  # rows were generated side by side
    assert len(model.batches) < 8 * alone / 2  # in far fewer forward passes than one request after another


def test_a_seeded_request_joins_the_batch_and_keeps_its_seed(serve):
    """A seed must not make other clients wait (it once ran alone after the batch drained): under
    load, the seeded row shares forward passes with others, and its own random draws still give the
    reply it gets alone (the scripted model's logits do not change with the rows beside it)."""
    client, model, _ = serve()
    alone = plain(ask(client, "Weather? seeded", temperature=1.5, seed=5))["content"]
    assert alone != plain(ask(client, "Weather? seeded", temperature=1.5, seed=6))["content"]
    model.batches.clear()
    held_together(model, 7)
    results = {}
    asks = [(i, lambda: ask(client, "Weather?", temperature=0)) for i in range(6)]
    asks.insert(3, ("seeded", lambda: ask(client, "Weather? seeded", temperature=1.5, seed=5)))
    threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, plain(f())["content"]))
               for k, f in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["seeded"] == alone and all(results[i] == "It is 18 degrees in Paris." for i in range(6))
    with_seeded = [b for b in model.batches if any(p.endswith("seeded\n\n\nASSISTANT:") for p in b)]
    assert max(len(b) for b in with_seeded) > 1


def raw(base: str, body: bytes | None, headers: dict | None = None, method: str = "POST",
        path: str = "/chat/completions") -> tuple[int, dict]:
    host, port = re.match(r"http://([^:]+):(\d+)", base).groups()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(method, "/v1" + path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, json.loads(data) if data else {}


def health_status(base: str) -> int:
    try:
        return urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


USER = b'{"role": "user", "content": "x"}'


@pytest.mark.parametrize(
    "body, status, text",
    [
        (b"{not json", 400, "JSON"),
        (b"[]", 400, "object"),
        (b'{"messages": []}', 400, "messages"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', 400, "messages.0.role"),
        (b'{"messages": [' + USER + b'], "temperature": "hot"}', 400, "temperature"),
        (b'{"messages": [' + USER + b'], "temperature": 3}', 400, "temperature"),
        (b'{"messages": [' + USER + b'], "max_tokens": 0}', 400, "max_tokens"),
        (b'{"messages": [' + USER + b'], "max_tokens": 100000}', 400, "this server allows"),
        (b'{"messages": [' + USER + b'], "n": 2}', 400, "n"),
        (b'{"messages": [' + USER + b'], "stop": [""]}', 400, "stop"),
        (b'{"messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
        (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', 400, "messages.0.content"),
        (b'{"messages": [{"role": "user", "content": "\\udc00x"}]}', 400, "surrogate"),
        (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}', 400, "only text"),
        (b'{"messages": [' + USER + b'], "tool_choice": "required"}', 400, "no tools"),
        (b'{"messages": [' + USER + b'], "tools": [' + b",".join([b'{"type": "function", "function": {"name": "f"}}']
                                                                 * 129) + b"]}", 400, "at most 128"),
        (b'{"messages": [' + USER + b'], "tools": [{"type": "function", "function": {"name": "f", '
         b'"parameters": {"type": "int"}}}]}', 400, "not a valid JSON Schema"),
        (b'{"messages": [' + USER + b'], "tools": [{"type": "function", "function": {"name": "f"}}], '
         b'"tool_choice": {"type": "function", "function": {"name": "g"}}}', 400, "not among the tools"),
        # Schemas are data: never fetched, bounded (fcmistral/format/schemas.py; tests/format/test_schemas.py)
        (b'{"messages": [' + USER + b'], "tools": [{"type": "function", "function": {"name": "f", '
         b'"parameters": {"$ref": "http://169.254.169.254/latest/meta-data/iam"}}}]}', 400, "never fetched"),
        (b'{"messages": [' + USER + b'], "tools": [{"type": "function", "function": {"name": "f", '
         b'"parameters": {"$ref": "#"}}}]}', 400, "refers to itself"),
        (b'{"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": '
         b'{"name": "f", "arguments": "{bad"}}]}]}', 400, "not JSON"),
        (b'{"messages": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", 400, "recursion limit"),
        (b'{"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": '
         b'{"name": "f", "arguments": "' + b"[" * 100_000 + b"]" * 100_000 + b'"}}]}]}', 400, "nested too deeply"),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(serve, body, status, text):
    _, _, base = serve()
    got, payload = raw(base, body)
    assert got == status, payload
    assert text in payload["error"]["message"] and payload["error"]["type"] == "invalid_request_error"


def test_limits_auth_and_routes(serve):
    _, _, base = serve(limits=Limits(max_request_bytes=2000, max_prompt_tokens=600, max_tokens=64), api_key="s3cret")
    key = {"Authorization": "Bearer s3cret"}
    assert raw(base, b"{}", {})[0] == 401
    assert raw(base, b"{}", {"Authorization": "Bearer wrong"})[1]["error"]["code"] == "invalid_api_key"
    status, payload = raw(base, b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}', key)
    assert status == 413 and "2000" in payload["error"]["message"]
    status, payload = raw(base, b'{"messages": [{"role": "user", "content": "' + b"x" * 1500 + b'"}]}', key)
    assert status == 400 and payload["error"]["code"] == "context_length_exceeded"
    assert raw(base, None, key, method="GET", path="/nope")[0] == 404
    assert raw(base, None, key, method="GET", path="/models")[1]["data"][0]["id"] == "scripted"
    client = openai.OpenAI(base_url=base, api_key="s3cret", max_retries=0)
    assert plain(ask(client, "Weather?"))["content"] == "It is 18 degrees in Paris."


def test_broken_content_length_and_slow_bodies(serve):
    _, _, base = serve(limits=Limits(body_timeout_s=1))
    host, port = re.match(r"http://([^:]+):(\d+)", base).groups()
    for header in (b"Content-Length: -1", b"Content-Length: 1e3", b"Content-Length: 1000000000000000"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + header
                         + b"\r\n\r\n{}")
            answer = sock.recv(200)
        assert re.match(rb"HTTP/1.1 (400|413)", answer), (header, answer)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # promises 100 bytes, sends 2
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{}")
        assert sock.recv(200).startswith(b"HTTP/1.1 408")


@pytest.mark.slow
def test_tiny_model_serves_end_to_end(tiny_model_dir):
    import subprocess
    import sys

    from tests.conftest import REPO

    process = subprocess.Popen([sys.executable, "serve.py", "--model_path", str(tiny_model_dir),
                                "--port", "0", "--max_new_tokens", "24"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        found = None
        while not found:
            line = process.stdout.readline()
            assert line, "the server exited before serving"
            found = re.search(r"serving \S+ on (http://\S+/v1)", line)
        base = found[1]
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
        full = plain(ask(client, "What's the weather like in Paris?", tools=TOOLS, temperature=0))
        streamed = reassemble(ask(client, "What's the weather like in Paris?", stream=True, tools=TOOLS, temperature=0,
                                  stream_options={"include_usage": True}))
        same(full, streamed)
        assert full["finish"] in ("stop", "length", "tool_calls") and full["usage"].completion_tokens > 0
        forced = plain(ask(client, "Convert 10 EUR to USD", tools=TOOLS, tool_choice="required", temperature=0))
        assert forced["finish"] in ("tool_calls", "stop", "length")
        if forced["finish"] == "tool_calls":
            assert forced["calls"][0]["name"] in {t["function"]["name"] for t in TOOLS}
        # Replies name the model by its folder's name, not by where it lies on this machine.
        assert [m.id for m in client.models.list().data] == [tiny_model_dir.name]
        assert client.completions.create(model="x", prompt="hi", max_tokens=1).model == tiny_model_dir.name
    finally:
        process.terminate()
        process.wait(30)


def completion(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def concurrently(calls: list[Callable[[], tuple[int, dict]]]) -> list[tuple[int, dict]]:
    results: list = [None] * len(calls)
    threads = [threading.Thread(target=lambda i=i, c=c: results.__setitem__(i, c())) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_tiny_temperature_is_greedy_and_harms_no_request_beside_it(serve):
    """temperature 1e-300 used to give NaN probabilities, and the sampler's error failed every row of
    its batch (8 greedy requests got 500 beside it)."""
    _, _, base = serve()
    greedy = {"prompt": "USER: Weather?\n\n\nASSISTANT:", "max_tokens": 8, "temperature": 0}
    results = concurrently([lambda: completion(base, greedy)] * 8
                           + [lambda: completion(base, {**greedy, "temperature": 1e-300})])
    assert [status for status, _ in results] == [200] * 9
    assert len({body["choices"][0]["text"] for _, body in results}) == 1  # the tiny temperature is greedy


def test_a_row_whose_sampling_fails_fails_alone(serve, monkeypatch):
    from fcmistral.serving.engine import rows, scheduler

    def broken_for_top_p_half(request, device):
        if request.top_p == 0.5:
            def boom(input_ids, scores):
                raise RuntimeError("a sampler failing")
            return [boom], torch.Generator()
        return rows.sampler(request, device)

    monkeypatch.setattr(scheduler, "sampler", broken_for_top_p_half)
    _, _, base = serve()
    body = {"prompt": "USER: Weather?\n\n\nASSISTANT:", "max_tokens": 8, "temperature": 0}
    results = concurrently([lambda: completion(base, body)] * 6
                           + [lambda: completion(base, {**body, "temperature": 1.0, "top_p": 0.5})])
    assert [status for status, _ in results] == [200] * 6 + [500]
    assert results[-1][1]["error"]["type"] == "server_error"


def test_only_json_bodies_and_allowed_hosts_are_served(serve):
    """A web page can post text/plain without asking, and a DNS name rebound to 127.0.0.1 reaches a
    local server with its own Host: neither may drive it."""
    _, _, base = serve(allowed_hosts=["localhost", "127.0.0.1", "::1"])
    body = b'{"prompt": "x", "max_tokens": 2}'
    status, payload = raw(base, body, {"Content-Type": "text/plain"}, path="/completions")
    assert status == 415 and "application/json" in payload["error"]["message"]
    assert raw(base, body, {"Content-Type": "application/json; charset=utf-8"}, path="/completions")[0] == 200
    status, payload = raw(base, body, {"Host": "evil.example:8000"}, path="/completions")
    assert status == 403 and payload["error"]["code"] == "forbidden_host"
    assert raw(base, body, {"Origin": "http://evil.example"}, path="/completions")[0] == 403
    assert raw(base, body, {"Host": "localhost:1", "Origin": "http://127.0.0.1:3000"}, path="/completions")[0] == 200


def test_a_head_that_never_ends_is_closed(serve, monkeypatch):
    """Connections that never finish their headers once held uvicorn's connection limit forever."""
    from fcmistral.serving.server import HeadDeadlineProtocol

    monkeypatch.setattr(HeadDeadlineProtocol, "head_timeout_s", 0.5)
    _, _, base = serve()
    host, port = re.match(r"http://([^:]+):(\d+)", base).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert sock.recv(200).startswith(b"HTTP/1.1 408")
        assert sock.recv(200) == b""  # closed
    assert raw(base, b'{"prompt": "x", "max_tokens": 2}', path="/completions")[0] == 200  # the next one is served


def slow(reply, seconds: float):
    """The scripted model, each forward pass taking ``seconds``."""
    def written(prompt: str) -> str:
        time.sleep(seconds)
        return reply(prompt)
    return written


def test_a_plain_request_whose_client_leaves_is_stopped(serve):
    """A client that disconnects no longer costs its whole max_tokens (streamed ones already stopped).
    Followed by events, not sleeps: the row is being generated, then its client leaves, then the row
    ends, stopped (it would take 400 passes of 0.01 s to end by itself)."""
    _, model, base = serve(reply=slow(lambda p: "y" * 500, 0.01))
    rows = rows_submitted(model)
    host, port = re.match(r"http://([^:]+):(\d+)", base).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        body = b'{"prompt": "USER: hi\\n\\n\\nASSISTANT:", "max_tokens": 400}'
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: rows and rows[0].ids, "the row is generated")
    wait_until(lambda: rows[0].finished, "the row ends")
    assert rows[0].cancelled and len(rows[0].ids) < 400, "the row went on after its client left"


def test_a_request_past_its_deadline_ends_with_504_or_an_error_event(serve):
    client, _, base = serve(reply=slow(lambda p: "y" * 500, 0.01), limits=Limits(request_timeout_s=0.5))
    status, payload = completion(base, {"prompt": "USER: hi\n\n\nASSISTANT:", "max_tokens": 400})
    assert status == 504 and payload["error"]["code"] == "timeout"
    events = sse_events(base, {"prompt": "USER: hi\n\n\nASSISTANT:", "max_tokens": 400, "stream": True})
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "timeout"
    assert all("error" not in json.loads(e) for e in events[:-2])
    with pytest.raises(openai.APIError, match="longer than this server allows"):
        list(ask(client, "hi", stream=True, max_tokens=400))


def sse_events(base: str, body: dict) -> list[str]:
    """The data of each server-sent event of a streamed request."""
    request = urllib.request.Request(f"{base}/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_a_failure_mid_stream_ends_with_an_error_event_and_done(serve):
    """A stream whose generation fails once it started is not cut: an error event, then [DONE]."""
    counted = {"n": 0}

    def counting(prompt: str) -> str:
        if "boom" in prompt:
            counted["n"] += 1
            if counted["n"] > 5:  # five tokens streamed, then the model fails
                raise RuntimeError("the model failing mid-reply")
        return "y" * 50

    _, _, base = serve(reply=counting)
    events = sse_events(base, {"prompt": "USER: boom\n\n\nASSISTANT:", "max_tokens": 40, "stream": True})
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "Traceback" not in error["message"]
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-2]).startswith("yy")
    assert completion(base, {"prompt": "USER: hi\n\n\nASSISTANT:", "max_tokens": 4})[0] == 200  # the engine goes on


def test_one_request_costs_at_most_twice_its_max_tokens(serve):
    """A text turn, the peek after it, a second turn and a retry once cost ~4x max_tokens."""
    def reply(prompt: str) -> str:
        if ASSISTANT_TAG not in prompt:
            return ""
        if prompt.endswith(END_OF_TURN):
            return "\n\n\nASSISTANT:"
        if "y" * 20 in prompt.rsplit("USER:", 1)[-1]:
            return " " + "z" * 100
        return " " + "y" * 20 + " " + END_OF_TURN

    client, _, _ = serve(reply=reply)
    reply_ = ask(client, "Weather?", tools=TOOLS, max_tokens=40)
    assert reply_.usage.completion_tokens <= 80
    assert reply_.choices[0].message.content.startswith("y" * 20)
