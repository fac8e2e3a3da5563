"""Which compute dtype this machine runs fast, decided in one place.

bf16 is right on GPUs that have it and on CPUs with native bf16 instructions (AVX512-BF16 or
AMX). On every other CPU torch emulates it: a bf16 matmul there is 50-90x slower than fp32, and
QLoRA with bf16 compute becomes unusable (a 1,000-step demo went from minutes to hours on an
AVX2-only EPYC). So the choice is read from the hardware, never assumed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import cache

import torch

from fcmistral.errors import UserError

log = logging.getLogger(__name__)

DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPUTE_DTYPE_CHOICES = ["auto", *DTYPE_NAMES]
COMPUTE_DTYPE_HELP = (
    "dtype of the computation: auto (bf16 on a GPU with bf16 or a CPU with native bf16, fp16 on an older "
    "GPU, fp32 on any other CPU), bf16, fp16 or fp32"
)


@dataclass(frozen=True)
class Hardware:
    """What the dtype choice depends on (a plain record, so every case can be tested anywhere)."""

    cuda: bool
    cuda_bf16: bool
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...
    cpu_native_bf16: bool

    def describe(self) -> str:
        if self.cuda:
            return f"CUDA GPU {'with' if self.cuda_bf16 else 'without'} bf16"
        return f"CPU {self.cpu_capability}, {'native' if self.cpu_native_bf16 else 'no native'} bf16"


def detect_hardware() -> Hardware:
    """This machine, as torch sees it.

    Native CPU bf16 needs the instructions (cpuinfo's avx512_bf16 or amx_bf16) *and* kernels
    that use them: torch's dispatch level must be AVX512 and oneDNN must accept bf16. The two
    last checks honour ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``, so an AVX512 machine
    told to behave as AVX2 is treated as one (that is how the AVX2 figures were measured here).
    """
    cuda = torch.cuda.is_available()
    capability = torch.backends.cpu.get_cpu_capability()
    flags = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    has_instructions = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    native_bf16 = (has_instructions and capability.startswith("AVX512")
                   and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    return Hardware(
        cuda=cuda,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
        cpu_capability=capability,
        cpu_native_bf16=native_bf16,
    )


def choose_compute_dtype(hardware: Hardware) -> torch.dtype:
    """bf16 on a GPU with bf16, fp16 on an older GPU, bf16 on a CPU with native bf16, else fp32."""
    if hardware.cuda:
        return torch.bfloat16 if hardware.cuda_bf16 else torch.float16
    return torch.bfloat16 if hardware.cpu_native_bf16 else torch.float32


@cache
def compute_dtype(name: str = "auto") -> torch.dtype:
    """The compute dtype for ``--compute_dtype NAME``; logged once per process (cached)."""
    hardware = detect_hardware()
    if name == "auto":
        dtype, why = choose_compute_dtype(hardware), "auto"
    elif name in DTYPE_NAMES:
        dtype, why = DTYPE_NAMES[name], "--compute_dtype"
    else:
        raise UserError(f"--compute_dtype {name!r}: choose one of {', '.join(COMPUTE_DTYPE_CHOICES)}")
    log.info("hardware: %s; compute dtype %s (%s)", hardware.describe(), str(dtype).removeprefix("torch."), why)
    return dtype


def _cpu_times() -> tuple[int, int] | None:
    """(total, idle) jiffies of all CPUs from /proc/stat, or None where there is none (not Linux)."""
    try:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def idle_cores(window_s: float = 1.0, cores: int | None = None) -> int:
    """How many cores were not busy with other work over the last ``window_s`` seconds (at least 1).

    Why: on a small CPU, PyTorch's threads wait for each other at every small op, so a thread
    sharing its core with another busy process stalls all of them. Measured with
    benchmarks/dtype_speed.py on 2 cores (tiny model): alone, 2 threads are 1.6x faster than 1;
    beside one busy process, 2 threads are 5-11x slower than 1.
    """
    cores = cores or os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        return cores
    time.sleep(window_s)
    after = _cpu_times()
    total, idle = after[0] - before[0], after[1] - before[1]
    busy = round(cores * (total - idle) / total) if total > 0 else 0
    return max(1, cores - busy)


if __name__ == "__main__":  # `python -m fcmistral.hardware`: the thread count run.sh's demo uses
    print(idle_cores())
