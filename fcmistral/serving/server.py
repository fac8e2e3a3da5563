"""Serving the API (``app.py``) with uvicorn on a socket bound before the model loads: the server's
options (``ServeArguments``) and its start (``serve_api``), which serve.py runs.

Binding first makes a port in use a one-line error at once, not after minutes of loading. The
socket listens with a normal backlog (2,048: bursts of clients are queued, not reset); uvicorn
closes idle keep-alive connections after a few seconds, answers 503 past ``limit_concurrency``
open connections instead of growing without bound, and logs a client that disconnects in one line.
uvicorn has no deadline on a request's head: ``HeadDeadlineProtocol`` adds one, so connections
that never finish their headers (slowloris) cannot hold the connection limit.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fcmistral.arguments import (
    LOOP_PENALTY_HELP,
    MAJORITY_DECISIONS_HELP,
    ModelArguments,
    check_call_bias,
    check_loop_penalty,
)
from fcmistral.errors import UserError
from fcmistral.hardware import compute_dtype

log = logging.getLogger(__name__)
BACKLOG = 2048
HEAD_TIMEOUT_S = 10.0  # a request's head (request line and headers) must arrive within this
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head: from the connection's
    start, and from the end of each response on a kept-alive one. A head not complete in time
    closes the connection (a 408 first)."""

    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_deadline = None
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()


def bind_server(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); UserError if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port}: {err.strerror or err}") from err
    return sock


def server_config(app: FastAPI, limit_concurrency: int = 1024, keep_alive_s: int = 5,
                  log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for ``app`` (the tests serve with these too)."""
    return uvicorn.Config(app, log_level=log_level, timeout_keep_alive=keep_alive_s, http=HeadDeadlineProtocol,
                          limit_concurrency=limit_concurrency, backlog=BACKLOG)


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted."""
    uvicorn.Server(server_config(app)).run(sockets=[sock])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeArguments:
    """serve.py's options; the model's are fcmistral.arguments.ModelArguments."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback by default)"})
    port: int = field(default=8000, metadata={"help": "port to serve on (0: any free port)"})
    api_key: str = field(default=None, metadata={
        "help": "requests must carry 'Authorization: Bearer KEY' (default: no key)"})
    allowed_hosts: str = field(default=None, metadata={
        "help": "comma-separated host names a request's Host (and a browser's Origin) may name, '*' any "
                "(default: localhost,127.0.0.1,::1 when serving on loopback, else any)"})
    served_model_name: str = field(default=None, metadata={
        "help": "the model's name in /v1/models and replies (default: the model folder's name)"})
    request_timeout_s: float = field(default=600.0, metadata={
        "help": "a request's whole generation must end within this (504 past it)"})
    engine_timeout_s: float = field(default=120.0, metadata={
        "help": "the engine is restarted when it has not finished a step (or idled) for this long"})
    max_new_tokens: int = field(default=400, metadata={"help": "a reply's default and largest max_tokens"})
    do_sample: bool = field(default=False, metadata={"help": "sample when a request gives no temperature"})
    temperature: float = field(default=0.7, metadata={"help": "the default temperature (with --do_sample)"})
    top_p: float = field(default=0.95, metadata={"help": "the default top_p (with --do_sample)"})
    constrained_calls: str = field(default="never", metadata={
        "help": "under tool_choice auto, constrain calls to the tools' schemas: never, strict (tools marked "
                "\"strict\": true), always (tool_choice required or a named tool is always constrained)",
        "choices": ["never", "strict", "always"]})
    call_bias: float = field(default=0.0, metadata={
        "help": "added to the call marker's first logit where a reply starts: > 0 calls more often, < 0 less"})
    loop_penalty: float = field(default=0.0, metadata={"help": LOOP_PENALTY_HELP})
    majority_decisions: bool = field(default=False, metadata={"help": MAJORITY_DECISIONS_HELP})
    max_batch_size: int = field(default=32, metadata={"help": "requests generated together at most"})
    engine_threads: int = field(default=None, metadata={
        "help": "torch threads of the generation process (default: measured at load: all cores if they make a "
                "decode step clearly faster than all but one, else all but one, left to the HTTP process)"})
    max_prompt_tokens: int = field(default=8192, metadata={"help": "longest prompt (400 past it)"})
    max_request_bytes: int = field(default=1 << 20, metadata={"help": "largest body (413 past it)"})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: a port is a number from 0 to 65535")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key must not be empty")
        check_loop_penalty(self.loop_penalty)
        check_call_bias(self.call_bias)
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise UserError("sampling needs --temperature above 0 and --top_p in (0, 1]")


def serve_command(argv: list[str] | None, description: str) -> None:
    """serve.py's command line (also reached through inference.py's old ``--serve``)."""
    from fcmistral.arguments import parse_arguments

    model_args, args = parse_arguments((ModelArguments, ServeArguments), description, argv=argv,
                                       positive=("max_new_tokens", "max_batch_size", "engine_threads",
                                                 "max_prompt_tokens", "max_request_bytes", "request_timeout_s",
                                                 "engine_timeout_s"))
    if not model_args.model_path:
        raise UserError("give --model_path (a merged model, or the base with --adapter_path)")
    serve_api(model_args, args)


def serve_api(model_args: ModelArguments, args: ServeArguments) -> None:
    """The OpenAI-compatible server. The port is taken first (a port in use is reported at once, not
    after minutes); the model loads in the engine's own process."""
    from fcmistral.generation import load_generation_tokenizer
    from fcmistral.serving.app import create_app
    from fcmistral.serving.engine.process import EngineProcess, EngineSpec
    from fcmistral.serving.limits import Limits

    sock = bind_server(args.host, args.port)
    if not is_loopback(args.host) and args.api_key is None:
        log.warning("serving on %s without --api_key: anyone who can reach it can use it", args.host)
    limits = Limits(max_request_bytes=args.max_request_bytes, max_prompt_tokens=args.max_prompt_tokens,
                    max_tokens=args.max_new_tokens, temperature=args.temperature if args.do_sample else 0.0,
                    top_p=args.top_p if args.do_sample else 1.0, request_timeout_s=args.request_timeout_s,
                    constrained_calls=args.constrained_calls, call_bias=args.call_bias,
                    loop_penalty=args.loop_penalty, majority_decisions=args.majority_decisions)
    if args.allowed_hosts is not None:
        allowed = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    else:
        allowed = LOOPBACK_NAMES if is_loopback(args.host) else ["*"]
    spec = EngineSpec(model_args.model_path, model_args.adapter_path, model_args.load_in_4bit,
                      compute_dtype(model_args.compute_dtype, model_args.model_path), args.max_batch_size,
                      args.engine_threads)
    tokenizer = load_generation_tokenizer(model_args.model_path, model_args.adapter_path)
    # A name, not the local path: replies should not tell clients where the model lies on this machine.
    model_name = args.served_model_name or Path(model_args.adapter_path or model_args.model_path).name
    engine = EngineProcess(spec, tokenizer, timeout_s=args.engine_timeout_s)
    host, port = sock.getsockname()[:2]
    print(f"serving {model_name} on http://{host}:{port}/v1", flush=True)
    try:
        serve(create_app(engine, model_name, limits, args.api_key, allowed), sock)
    finally:
        engine.close()
