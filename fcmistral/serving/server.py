"""Serving the API (``app.py``) with uvicorn on a socket bound before the model loads: the server's
options (``ServeArguments``) and its start (``serve_api``), which serve.py runs.

Binding first makes a port in use a one-line error at once, not after minutes of loading. The
socket listens with a normal backlog (2,048: bursts of clients are queued, not reset); uvicorn
closes idle keep-alive connections after a few seconds, answers 503 past ``limit_concurrency``
open connections instead of growing without bound, and logs a client that disconnects in one line.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from fcmistral.arguments import ModelArguments
from fcmistral.errors import UserError
from fcmistral.hardware import compute_dtype

BACKLOG = 2048


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


def serve(app: FastAPI, sock: socket.socket, limit_concurrency: int = 1024, keep_alive_s: int = 5) -> None:
    """Serve ``app`` on ``sock`` until interrupted."""
    config = uvicorn.Config(app, log_level="info", timeout_keep_alive=keep_alive_s,
                            limit_concurrency=limit_concurrency, backlog=BACKLOG)
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class ServeArguments:
    """serve.py's options; the model's are fcmistral.arguments.ModelArguments."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback by default)"})
    port: int = field(default=8000, metadata={"help": "port to serve on (0: any free port)"})
    api_key: str = field(default=None, metadata={
        "help": "requests must carry 'Authorization: Bearer KEY' (default: no key)"})
    max_new_tokens: int = field(default=400, metadata={"help": "a reply's default and largest max_tokens"})
    do_sample: bool = field(default=False, metadata={"help": "sample when a request gives no temperature"})
    temperature: float = field(default=0.7, metadata={"help": "the default temperature (with --do_sample)"})
    top_p: float = field(default=0.95, metadata={"help": "the default top_p (with --do_sample)"})
    max_batch_size: int = field(default=32, metadata={"help": "requests generated together at most"})
    engine_threads: int = field(default=None, metadata={
        "help": "torch threads of the generation process (default: all cores but one, which the HTTP process gets)"})
    max_prompt_tokens: int = field(default=8192, metadata={"help": "longest prompt (400 past it)"})
    max_request_bytes: int = field(default=1 << 20, metadata={"help": "largest body (413 past it)"})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: a port is a number from 0 to 65535")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key must not be empty")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise UserError("sampling needs --temperature above 0 and --top_p in (0, 1]")


def serve_command(argv: list[str] | None, description: str) -> None:
    """serve.py's command line (also reached through inference.py's old ``--serve``)."""
    from fcmistral.arguments import parse_arguments

    model_args, args = parse_arguments((ModelArguments, ServeArguments), description, argv=argv,
                                       positive=("max_new_tokens", "max_batch_size", "engine_threads",
                                                 "max_prompt_tokens", "max_request_bytes"))
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
    limits = Limits(max_request_bytes=args.max_request_bytes, max_prompt_tokens=args.max_prompt_tokens,
                    max_tokens=args.max_new_tokens, temperature=args.temperature if args.do_sample else 0.0,
                    top_p=args.top_p if args.do_sample else 1.0)
    spec = EngineSpec(model_args.model_path, model_args.adapter_path, model_args.load_in_4bit,
                      compute_dtype(model_args.compute_dtype, model_args.model_path), args.max_batch_size,
                      args.engine_threads)
    tokenizer = load_generation_tokenizer(model_args.model_path, model_args.adapter_path)
    model_name = model_args.adapter_path or model_args.model_path
    engine = EngineProcess(spec, tokenizer)
    host, port = sock.getsockname()[:2]
    print(f"serving {model_name} on http://{host}:{port}/v1", flush=True)
    try:
        serve(create_app(engine, model_name, limits, args.api_key), sock)
    finally:
        engine.close()
