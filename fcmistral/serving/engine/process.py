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

Supervision (``EngineProcess``): the engine sends something after every step and every idle
second; one that exits, or is silent for ``--engine_timeout_s`` (hung, or stopped), is killed and
started again, its requests in flight ending with a retryable error (503; a stream's error event).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import queue
import signal
import threading
import time
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
    threads: int | None = None  # torch's threads in the engine; None: measured (serving/engine/threads.py)
    max_prefill_tokens: int = 16384


def _run_engine(spec: EngineSpec, requests, updates) -> None:
    """The engine process: load, say ready (or why not), then serve requests until the pipe closes.
    After every step, and every second when idle, it sends the step's updates or a heartbeat.

    Only the generation thread runs torch's parallel kernels: the model loads here with one thread,
    and its thread count is set (or measured) in the generation thread. Why: torch's OpenMP keeps a
    pool of threads per thread that has run a parallel kernel, and with more pooled threads than
    cores they stop spinning between kernels and sleep; a decode step of SmolLM2 in the generation
    thread took 51-55 ms with 2 threads once the main thread had run its own, 32 ms otherwise."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, whose exit ends this process

    def failed(err: Exception) -> None:  # the parent reports it as the server's one-line error
        updates.send(("failed", str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"))

    try:
        import torch

        from fcmistral.generation import load_for_generation
        from fcmistral.serving.engine import BatchingEngine
        from fcmistral.serving.engine.threads import engine_threads

        cores = torch.get_num_threads()  # torch's own default: the cores this process may use
        torch.set_num_threads(1)  # (see above: no pool in this thread)
        model, tokenizer = load_for_generation(spec.model_path, spec.adapter_path, spec.load_in_4bit, spec.dtype)
    except Exception as err:  # noqa: BLE001 - reported, then the process ends
        failed(err)
        return
    outbox: list[tuple[int, Update]] = []
    rows = {}

    def setup() -> None:  # in the generation thread, before its first step
        try:
            # --engine_threads, or all cores for a model whose decode step is long, else all but one
            threads = engine_threads(model, cores, spec.threads)
        except Exception as err:  # noqa: BLE001 - reported; this thread ends, and the parent ends the process
            failed(err)
            raise
        updates.send(("ready", threads))

    def flush() -> None:  # in the generation thread, after each step (or idle second)
        updates.send(("updates", outbox[:]))  # an empty list is the heartbeat
        outbox.clear()

    def sender(key: int) -> Callable[[Update], None]:
        def send(update: Update) -> None:
            outbox.append((key, update))
            if update.finish_reason:
                rows.pop(key, None)
        return send

    engine = BatchingEngine(model, tokenizer, spec.max_batch_size, after_step=flush,
                            max_prefill_tokens=spec.max_prefill_tokens, setup=setup)
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


class _Incarnation:
    """One engine process and its pipes; its updates are read by a thread of its own."""

    def __init__(self, spec: EngineSpec) -> None:
        context = multiprocessing.get_context("spawn")
        requests_out, self.requests = context.Pipe(duplex=False)
        self.updates, updates_in = context.Pipe(duplex=False)
        self.process = context.Process(target=_run_engine, args=(spec, requests_out, updates_in), daemon=True,
                                       name="engine")
        self.process.start()
        requests_out.close()
        updates_in.close()
        self.last_beat = time.monotonic()

    def wait_ready(self) -> None:
        """Until the model is loaded; UserError with the engine's reason if it cannot be."""
        try:
            kind, message = self.updates.recv()
        except EOFError:
            self.process.join(5)
            kind, message = "failed", f"the engine process exited (code {self.process.exitcode})"
        if kind == "failed":
            raise UserError(message)
        log.info("%s", message)  # the engine's thread count, and why
        self.last_beat = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()  # SIGKILL: a stopped (SIGSTOP) or hung process ends too
        self.process.join(10)
        for pipe in (self.requests, self.updates):
            pipe.close()


class EngineProcess(EngineClient):
    """The app's engine when the model runs in another process (see the module docstring), supervised:
    an engine that exits, or sends neither updates nor a heartbeat for ``timeout_s`` (hung, or
    stopped), is killed and started again. Its requests in flight end with a retryable error (503),
    as do requests that arrive while it loads; /health says so meanwhile.

    Requests reach the engine through a sender thread, so a stopped engine whose pipe is full can
    never block the event loop."""

    def __init__(self, spec: EngineSpec, tokenizer, timeout_s: float = 120.0) -> None:
        self.tokenizer, self.spec, self.timeout_s = tokenizer, spec, timeout_s
        self._keys, self._closing = itertools.count(), False
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()  # guards _waiting and _current between the event loop and the threads
        self._outbox: queue.Queue = queue.Queue()
        self._current = _Incarnation(spec)
        self._current.wait_ready()
        self._ready = True
        self.restarts = 0
        self._start_reader(self._current)
        threading.Thread(target=self._send, name="engine-requests", daemon=True).start()
        threading.Thread(target=self._supervise, name="engine-supervisor", daemon=True).start()

    def start(self, request: GenerationRequest, streamed: bool, updates: asyncio.Queue) -> Callable[[], None]:
        key = next(self._keys)
        with self._lock:
            if not self._ready:
                updates.put_nowait(Update("", "error", error="the generation engine is restarting; retry shortly",
                                          retryable=True))
                return lambda: None
            current = self._current
            self._waiting[key] = (asyncio.get_running_loop(), updates)
        self._outbox.put((current, ("submit", key, (request, streamed))))

        def stop() -> None:
            with self._lock:
                waiting = self._waiting.pop(key, None)
            if waiting is not None:
                self._outbox.put((current, ("cancel", key, None)))
        return stop

    def alive(self) -> bool:
        """Ready and heard from within the timeout (what /health reports)."""
        return self._ready and time.monotonic() - self._current.last_beat < self.timeout_s

    def close(self) -> None:
        """Stop the engine process: it ends when its request pipe closes."""
        self._closing = True
        self._outbox.put(None)
        self._current.requests.close()
        self._current.process.join(30)

    def _send(self) -> None:
        """Hands queued requests to their engine; those for an engine that is gone are dropped
        (their callers got their error from the supervisor)."""
        while (item := self._outbox.get()) is not None:
            incarnation, message = item
            try:
                incarnation.requests.send(message)
            except (OSError, ValueError):  # a killed engine's closed pipe
                pass

    def _start_reader(self, incarnation: _Incarnation) -> None:
        threading.Thread(target=self._read, args=(incarnation,), name="engine-updates", daemon=True).start()

    def _read(self, incarnation: _Incarnation) -> None:
        """Hands each step's updates to the event loops waiting for them, and notes the heartbeat."""
        while True:
            try:
                _, updates = incarnation.updates.recv()
            except (EOFError, OSError):
                return  # the supervisor sees the process gone
            incarnation.last_beat = time.monotonic()
            if updates:
                self._deliver_soon(updates)

    def _supervise(self) -> None:
        """Every quarter second: restart the engine if it exited or its heartbeat stopped."""
        while not self._closing:
            time.sleep(0.25)
            current = self._current
            silent = time.monotonic() - current.last_beat
            if current.process.is_alive() and silent < self.timeout_s:
                continue
            if self._closing:
                return
            why = (f"exited (code {current.process.exitcode})" if not current.process.is_alive()
                   else f"sent nothing for {silent:.1f} s")
            log.error("the generation engine %s; restarting it", why)
            started = time.monotonic()
            with self._lock:
                self._ready = False
                failed = list(self._waiting)
            self._deliver_soon([(key, Update("", "error", error=f"the generation engine {why} and is being "
                                             "restarted; retry", retryable=True)) for key in failed])
            current.kill()
            self._current = self._restarted()
            self._start_reader(self._current)
            with self._lock:
                self._ready = True
            self.restarts += 1
            log.warning("the generation engine is serving again (restarted in %.1f s)", time.monotonic() - started)

    def _restarted(self) -> _Incarnation:
        """A new engine process, loaded; tried again (after a pause) until one loads."""
        while True:
            incarnation = _Incarnation(self.spec)
            try:
                incarnation.wait_ready()
                return incarnation
            except UserError as err:
                log.error("the generation engine could not restart (%s); trying again in 5 s", err)
                incarnation.kill()
                time.sleep(5)

    def _deliver_soon(self, updates: list[tuple[int, Update]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for key, update in updates:
                waiting = self._waiting.get(key)
                if waiting is None:
                    continue
                if update.finish_reason:
                    del self._waiting[key]
                by_loop.setdefault(waiting[0], []).append((waiting[1], update))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[asyncio.Queue, Update]]) -> None:
    for queue_, update in items:
        queue_.put_nowait(update)
