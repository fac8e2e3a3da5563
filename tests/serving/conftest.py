"""The server tests' fixtures: the app on a free port over the real batching engine and uvicorn,
with the scripted model (tests/serving/scripted.py)."""

from __future__ import annotations

import threading
import time

import pytest
import uvicorn

openai = pytest.importorskip("openai")

from fcmistral.serving.app import create_app
from fcmistral.serving.engine import BatchingEngine
from fcmistral.serving.limits import Limits
from fcmistral.serving.server import bind_server, server_config
from tests.serving.scripted import CharTokenizer, ScriptedModel, reply_after


@pytest.fixture(autouse=True)
def char_text_encoder(monkeypatch):
    """The engine encodes prompts (and the call bias and the loop penalty find the call marker's tokens) with
    fcmistral.modeling.text_encoder, a copy of a Hugging Face tokenizer's Rust backend; the
    character tokenizer is its own."""
    from fcmistral import call_loops, constraint
    from fcmistral.serving.engine import client

    real = client.text_encoder
    for module in (client, constraint, call_loops):
        monkeypatch.setattr(module, "text_encoder", lambda tok: tok if isinstance(tok, CharTokenizer) else real(tok))


@pytest.fixture()
def serve():
    """Start the app on a free port with a scripted model; yields (client, model, base_url)."""
    servers = []

    def start(reply=reply_after, limits: Limits | None = None, api_key: str | None = None, batch: int = 32,
              allowed_hosts: list[str] | None = None):
        model = ScriptedModel(reply)
        model.engine = BatchingEngine(model, CharTokenizer(), batch)
        app = create_app(model.engine, "scripted", limits or Limits(), api_key, allowed_hosts)
        sock = bind_server("127.0.0.1", 0)
        server = uvicorn.Server(server_config(app, keep_alive_s=2, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        client = openai.OpenAI(base_url=base, api_key=api_key or "unused", max_retries=0, timeout=30)
        return client, model, base

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
