"""Shared by the benchmark scripts: timing, peak memory, and a Mistral-sized tokenizer."""

from __future__ import annotations

import resource
import sysconfig
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def timed(results: dict, key: str):
    """Time the block into ``results[key]``; timed again, the key keeps the best (least noisy) run."""
    start = time.perf_counter()
    yield
    results[key] = min(results.get(key, float("inf")), time.perf_counter() - start)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mistral_sized_tokenizer(texts: list[str], vocab_size: int = 32000):
    """A byte-level BPE with Mistral's vocabulary size, trained here.

    Synthetic glaive rows alone hold only ~4,900 merges, so the training text also includes the
    Python standard library's sources (about 30 MB on every machine, code and English comments,
    as Mistral's own training mix has) to fill the 32k vocabulary.
    """
    from fcmistral.demo.tiny import train_tokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [p.read_text(encoding="utf-8", errors="replace")
               for p in sorted(stdlib.rglob("*.py")) if "site-packages" not in p.parts]
    return train_tokenizer(texts + sources, vocab_size=vocab_size)
