"""Serving the API (``app.py``) with uvicorn on a socket bound before the model loads.

Binding first makes a port in use a one-line error at once, not after minutes of loading. The
socket listens with a normal backlog (2,048: bursts of clients are queued, not reset); uvicorn
closes idle keep-alive connections after a few seconds, answers 503 past ``limit_concurrency``
open connections instead of growing without bound, and logs a client that disconnects in one line.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from fcmistral.errors import UserError

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
