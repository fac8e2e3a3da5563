"""Shared by the benchmark scripts: timing, peak memory, and a serve.py to measure."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def timed(results: dict, key: str):
    """Time the block into ``results[key]``; timed again, the key keeps the best (least noisy) run."""
    start = time.perf_counter()
    yield
    results[key] = min(results.get(key, float("inf")), time.perf_counter() - start)


def model_or_tiny(model_path: str | None, tmp: str) -> str:
    """``model_path``, or the tiny model built in the folder ``tmp`` (each script's quick default)."""
    if model_path is not None:
        return str(model_path)
    from fcmistral.demo.tiny import build_tiny_model

    return str(build_tiny_model(f"{tmp}/tiny"))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started, from any of its threads: an engine restarted after a crash is
    the server's supervisor thread's child, not its main thread's."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def engine_pid(server_pid: int) -> int:
    """The serve.py process's engine (its one child that is not multiprocessing's resource tracker)."""
    engines = [c for c in child_pids(server_pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(engines) == 1, engines
    return engines[0]


def rss_mib(pid: int) -> float:
    """Resident memory of the process and its children (the server's engine process)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024 + sum(rss_mib(child) for child in child_pids(pid))


def run_together(threads: list[threading.Thread]) -> float:
    """Start ``threads``, wait for all; the seconds it took."""
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (None when there are none), rounded to the millisecond."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


@contextmanager
def running_server(model_path: str | None, tmp: str, *options: str) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """``serve.py`` on a free port with ``options`` (the tiny model, built in ``tmp``, unless
    ``model_path``); yields the process, its base URL and the model's path, and stops it after."""
    model_path = model_or_tiny(model_path, tmp)
    log = Path(tmp) / "server.log"  # a file: a pipe nobody reads fills up and blocks the server's log
    server = subprocess.Popen([sys.executable, "serve.py", "--model_path", model_path, "--port", "0", *options],
                              cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        while not (found := re.search(r"serving \S+ on (http://\S+/v1)", log.read_text())):
            if server.poll() is not None:
                raise SystemExit(f"error: the server exited before serving:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server, found[1], model_path
    finally:
        server.terminate()
        server.wait(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_process_server(command: list[str], ready: str, log: Path, timeout: float = 300) -> Iterator[subprocess.Popen]:
    """Another engine's OpenAI server (``command``), once its ``ready`` URL answers; stopped after."""
    server = subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"error: {command[0]} exited before serving:\n{log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(ready, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: {command[0]} did not answer within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        server.wait(60)
