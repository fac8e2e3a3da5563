"""The engine process killed (SIGKILL) or frozen (SIGSTOP) mid-batch, under serve.py with the tiny
model: requests in flight end with a clear error at once (a streamed one with an error event and
[DONE], a plain one with a 503 clients retry), /health says so, the engine is restarted, and new
requests are served again. The times taken are measured by benchmarks/server_chaos.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.common import engine_pid
from tests.conftest import REPO
from tests.serving.test_server import completion, health_status

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow
PROMPT = "USER: Tell me a long story\n\n\nASSISTANT:"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process = subprocess.Popen([sys.executable, "serve.py", "--model_path", str(tiny_model_dir), "--port", "0",
                                "--max_new_tokens", "1500", "--engine_timeout_s", "2"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 300
    while not (found := re.search(r"serving \S+ on (http://\S+/v1)", "".join(lines))):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)
    base = found[1]
    yield process, base, lines
    process.terminate()
    process.wait(30)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_a_dead_or_frozen_engine_fails_its_requests_clearly_and_is_restarted(server, how):
    process, base, lines = server
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
    while health_status(base) != 200:  # (after the other case's restart)
        time.sleep(0.2)
    before = engine_pid(process.pid)
    body = {"prompt": PROMPT, "max_tokens": 1500, "temperature": 0}
    plain: list = []
    thread = threading.Thread(target=lambda: plain.append(completion(base, body)))
    thread.start()
    stream = iter(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1500, temperature=0, stream=True))
    next(stream)  # both requests are being generated
    os.kill(before, how)
    with pytest.raises(openai.APIError, match="restarted"):
        for _ in stream:
            pass
    thread.join(60)
    status, payload = plain[0]
    assert status == 503 and payload["error"]["code"] == "engine_unavailable", payload
    assert health_status(base) == 503
    deadline = time.monotonic() + 120
    while health_status(base) != 200:
        assert time.monotonic() < deadline, "".join(lines[-20:])
        time.sleep(0.2)
    assert engine_pid(process.pid) != before
    status, payload = completion(base, {"prompt": "USER: hi\n\n\nASSISTANT:", "max_tokens": 4, "temperature": 0})
    assert status == 200 and payload["usage"]["completion_tokens"] > 0
    assert any("serving again" in line for line in lines)
