"""The batching engine in a process of its own, beside the HTTP server's.

Python runs one thread of a process at a time (the GIL). In one process, the server's request
handling (HTTP, validation, tokenizing, JSON) and the generation loop (the model's Python between
its kernels) take turns, and the whole server used at most one core: with the tiny model, 8 clients
got 3.4x the requests/s of one while the second core sat idle. With the engine in its own process
(the split vLLM makes between its API server and its engine core), each side has a core.

The engine process loads the model itself (started with ``spawn``: a forked copy of a process that
has run torch's thread pool can hang) and says when it is ready or why it failed. Requests go to it
through one pipe; its updates come back through another, one message per generation step holding
every row's new text, which a reader thread hands to the event loop in one call. Tokenizing stays
here: the app needs the prompt's length before it queues the request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fcmistral.errors import UserError
from fcmistral.serving.engine import EngineClient, GenerationRequest, Update

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """What the engine process loads and how many rows it batches."""

    model_path: str
    adapter_path: str | None = None
    load_in_4bit: bool = False
    dtype: torch.dtype | None = None  # None: the hardware's choice
    max_batch_size: int = 32
    threads: int | None = None  # torch's threads in the engine; None: all cores but one (see _run_engine)


def _run_engine(spec: EngineSpec, requests, updates) -> None:
    """The engine process: load, say ready (or why not), then serve requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, whose exit ends this process
    try:
        import torch

        from fcmistral.generation import load_for_generation
        from fcmistral.serving.engine import BatchingEngine

        # One core is left to the HTTP process: torch's threads wait for work by spinning, so a pool
        # as wide as the machine takes the core the server needs (measured on 2 cores with the tiny
        # model: 8 clients got 88 requests/s with 2 threads, 100 with 1).
        torch.set_num_threads(spec.threads or max(1, torch.get_num_threads() - 1))
        model, tokenizer = load_for_generation(spec.model_path, spec.adapter_path, spec.load_in_4bit, spec.dtype)
    except Exception as err:  # noqa: BLE001 - the parent reports it as the server's one-line error
        updates.send(("failed", str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"))
        return
    outbox: list[tuple[int, Update]] = []
    rows = {}

    def flush() -> None:  # in the generation thread, after each step
        if outbox:
            updates.send(("updates", outbox[:]))
            outbox.clear()

    def sender(key: int) -> Callable[[Update], None]:
        def send(update: Update) -> None:
            outbox.append((key, update))
            if update.finish_reason:
                rows.pop(key, None)
        return send

    engine = BatchingEngine(model, tokenizer, spec.max_batch_size, after_step=flush)
    updates.send(("ready", None))
    while True:
        try:
            kind, key, payload = requests.recv()
        except EOFError:  # the server is gone
            return
        if kind == "submit":
            request, streamed = payload
            rows[key] = engine.submit(request, streamed, sender(key))
        elif (row := rows.pop(key, None)) is not None:  # "cancel"
            row.cancelled = True


class EngineProcess(EngineClient):
    """The app's engine when the model runs in another process (see the module docstring)."""

    def __init__(self, spec: EngineSpec, tokenizer) -> None:
        self.tokenizer = tokenizer
        context = multiprocessing.get_context("spawn")
        requests_out, self._requests = context.Pipe(duplex=False)
        self._updates, updates_in = context.Pipe(duplex=False)
        self.process = context.Process(target=_run_engine, args=(spec, requests_out, updates_in), daemon=True,
                                       name="engine")
        self.process.start()
        requests_out.close()
        updates_in.close()
        try:
            kind, message = self._updates.recv()
        except EOFError:
            self.process.join(5)
            kind, message = "failed", f"the engine process exited (code {self.process.exitcode})"
        if kind == "failed":
            raise UserError(message)
        self._keys, self._closing = itertools.count(), False
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._reader = threading.Thread(target=self._read, name="engine-updates", daemon=True)
        self._reader.start()

    def start(self, request: GenerationRequest, streamed: bool, updates: asyncio.Queue) -> Callable[[], None]:
        key = next(self._keys)
        if not self.process.is_alive():
            updates.put_nowait(Update("", "error"))
            return lambda: None
        self._waiting[key] = (asyncio.get_running_loop(), updates)
        self._requests.send(("submit", key, (request, streamed)))

        def stop() -> None:
            if self._waiting.pop(key, None) is not None and self.process.is_alive():
                self._requests.send(("cancel", key, None))
        return stop

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        """Stop the engine process: it ends when its request pipe closes."""
        self._closing = True
        self._requests.close()
        self.process.join(30)

    def _read(self) -> None:
        """Hands each step's updates to the event loops waiting for them; all fail if the engine dies."""
        while True:
            try:
                _, updates = self._updates.recv()
            except (EOFError, OSError):
                if self._closing:
                    return
                log.error("the engine process exited (code %s)", self.process.exitcode)
                for key in list(self._waiting):
                    self._deliver_soon([(key, Update("", "error"))])
                return
            self._deliver_soon(updates)

    def _deliver_soon(self, updates: list[tuple[int, Update]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for key, update in updates:
            waiting = self._waiting.get(key)
            if waiting is not None:
                by_loop.setdefault(waiting[0], []).append((key, waiting[1], update))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(self._deliver, items)

    def _deliver(self, items: list[tuple[int, asyncio.Queue, Update]]) -> None:
        for key, queue, update in items:
            queue.put_nowait(update)
            if update.finish_reason:
                self._waiting.pop(key, None)
