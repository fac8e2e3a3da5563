"""The README's promise: `bash run.sh` on a CPU machine trains the tiny model until it calls the
right function on held-out prompts."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_run_sh_demo_learns_to_call_functions(tmp_path):
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "NUM_GPUS": "0", "LOG_DIR": str(tmp_path / "logs"),
           "TINY_DIR": str(tmp_path / "tiny"), "DEMO_DIR": str(tmp_path / "demo")}
    env.pop("MODEL_PATH", None)
    result = subprocess.run(["bash", str(REPO / "run.sh")], capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = re.search(r"demo: eval loss ([\d.]+) \(step 0\) -> ([\d.]+) \(best\)", result.stdout)
    accuracy = re.search(r"held-out prompts: (\d+)/(\d+)", result.stdout)
    assert losses and accuracy, result.stdout[-2000:]
    assert float(losses[2]) < float(losses[1]) / 4
    assert int(accuracy[1]) / int(accuracy[2]) >= 0.8
    assert list((tmp_path / "logs").glob("demo-*.log"))
    assert (tmp_path / "demo" / "adapter_model.safetensors").is_file()
