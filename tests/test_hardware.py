"""The compute dtype follows the hardware: every case of the rule, the override, and the
loading paths that obey it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fcmistral.errors import UserError
from fcmistral.hardware import (
    CPU_BF16_MIN_HIDDEN,
    Hardware,
    choose_compute_dtype,
    compute_dtype,
    detect_hardware,
    model_hidden_size,
)
from tests.conftest import REPO


@pytest.mark.parametrize(
    "hardware, expected",
    [
        (Hardware(cuda=True, cuda_bf16=True, cpu_capability="AVX2", cpu_native_bf16=False), torch.bfloat16),
        (Hardware(cuda=True, cuda_bf16=False, cpu_capability="AVX512", cpu_native_bf16=True), torch.float16),
        (Hardware(cuda=False, cuda_bf16=False, cpu_capability="AVX512", cpu_native_bf16=True), torch.bfloat16),
        (Hardware(cuda=False, cuda_bf16=False, cpu_capability="AVX512", cpu_native_bf16=False), torch.float32),
        (Hardware(cuda=False, cuda_bf16=False, cpu_capability="AVX2", cpu_native_bf16=False), torch.float32),
        (Hardware(cuda=False, cuda_bf16=False, cpu_capability="DEFAULT", cpu_native_bf16=False), torch.float32),
    ],
)
def test_dtype_rule_for_every_kind_of_hardware(hardware, expected):
    assert choose_compute_dtype(hardware) == expected


NATIVE_CPU = Hardware(cuda=False, cuda_bf16=False, cpu_capability="AVX512", cpu_native_bf16=True)
GPU = Hardware(cuda=True, cuda_bf16=True, cpu_capability="AVX2", cpu_native_bf16=False)


@pytest.mark.parametrize("hardware, hidden_size, expected", [
    (NATIVE_CPU, 128, torch.float32),  # the demo's tiny model: bf16 slower and learns less (hardware.py)
    (NATIVE_CPU, CPU_BF16_MIN_HIDDEN - 1, torch.float32),
    (NATIVE_CPU, CPU_BF16_MIN_HIDDEN, torch.bfloat16),
    (NATIVE_CPU, 4096, torch.bfloat16),
    (GPU, 128, torch.bfloat16),  # the width only counts on a CPU
])
def test_dtype_rule_follows_the_model_width_on_a_cpu(hardware, hidden_size, expected):
    assert choose_compute_dtype(hardware, hidden_size) == expected


def test_auto_reads_the_width_of_the_model_folder(tiny_model_dir):
    """The tiny model (width 128) computes in fp32 on any CPU, native bf16 or not."""
    assert model_hidden_size(str(tiny_model_dir)) == 128
    assert model_hidden_size("/nonexistent/model") is None
    if not torch.cuda.is_available():
        assert compute_dtype("auto", str(tiny_model_dir)) == torch.float32


def test_override_and_bad_name():
    assert compute_dtype("fp32") == torch.float32 and compute_dtype("bf16") == torch.bfloat16
    assert compute_dtype("fp16") == torch.float16
    assert compute_dtype("auto") == choose_compute_dtype(detect_hardware())
    with pytest.raises(UserError, match="--compute_dtype 'fp8'"):
        compute_dtype("fp8")


def test_a_cpu_told_to_behave_as_avx2_has_no_native_bf16():
    """torch's dispatch level counts, not only cpuinfo's flags: an AVX512-BF16 machine run with
    ATEN_CPU_CAPABILITY=avx2 emulates bf16 (about 80x slower here) and must get fp32."""
    code = "from fcmistral.hardware import detect_hardware as d; h = d(); print(h.cpu_capability, h.cpu_native_bf16)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["AVX2", "False"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_4bit_model_computes_in_the_dtype_asked(dtype, tiny_model_dir, tiny_tokenizer):
    import bitsandbytes as bnb

    from fcmistral.modeling import load_model

    model = load_model(str(tiny_model_dir), load_in_4bit=True, tokenizer=tiny_tokenizer, dtype=dtype)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.compute_dtype == dtype for layer in layers)
    assert model.get_input_embeddings().weight.dtype == dtype
    ids = tiny_tokenizer(["USER: hi"], return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.dtype in (dtype, torch.float32)


def test_idle_cores_leaves_out_a_core_taken_by_a_busy_process():
    import os
    import time

    from fcmistral.hardware import idle_cores

    cores = os.cpu_count()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # running before the window opens
        assert 1 <= idle_cores(window_s=1.0) <= max(1, cores - 1)
    finally:
        hog.kill()
        hog.wait()
