"""Shared by the benchmark scripts: timing, peak memory, and a Mistral-sized tokenizer."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as scripts from anywhere


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mistral_sized_tokenizer(texts: list[str], vocab_size: int = 32000):
    """A byte-level BPE trained here with Mistral's vocabulary size as its target (what the data
    allows: synthetic rows may not hold 32k distinct merges)."""
    from fcmistral.tiny import train_tokenizer

    return train_tokenizer(texts, vocab_size=vocab_size)
