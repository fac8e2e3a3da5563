"""Which compute dtype this machine runs fast for the model at hand, decided in one place.

The rule (``choose_compute_dtype``) reads the hardware and the model's width, never assumes:

- GPU: bf16 where it has it, else fp16.
- CPU without native bf16 (no AVX512-BF16/AMX, or torch told to dispatch below AVX512): fp32.
  torch emulates bf16 there: a bf16 matmul is 50-90x slower than fp32, and the 1,000-step demo
  went from minutes to hours on an AVX2-only EPYC.
- CPU with native bf16: bf16 only for a model at least ``CPU_BF16_MIN_HIDDEN`` wide, fp32 below.
  Why a size threshold and not a probe: bf16 wins on the matmuls only, and a narrow model's step
  is mostly everything else (casts, NF4 dequantization, norms, attention on short rows), which
  bf16 does not speed up; a probe of one matmul would pick bf16 wrongly, and a probe of the real
  step costs more than the choice is worth. Figures (``benchmarks/dtype_speed.py``, 2 threads):
  on a 2-core AMD EPYC with AVX512-BF16 (no AMX), a 4096x256x1024 matmul takes 0.12x the fp32
  time in bf16, a NF4 ``Linear4bit`` forward+backward 0.43x, but a tiny-model (hidden 128) QLoRA
  step 0.90x; on a 2-core Intel Xeon with AMX the whole demo took 248 s in bf16 against 206-228 s
  in fp32, and bf16 learnt less (held-out call-name accuracy 77.8% and "below 80%" against
  84-91% in fp32, issue 22). On the AMD EPYC, SmolLM2-135M (width 576) steps 0.86x in bf16:
  close to the tiny model's 0.90x there, so on that CPU the threshold rests less on speed than on
  what fp32 buys a narrow model trained from random weights (accuracy, and a run that repeats bit
  for bit). Models of the field (Mistral-7B: 4096, SmolLM2-135M: 576, Qwen2.5-0.5B: 896) are wider,
  and there the matmuls dominate. A model whose width cannot be read (a hub name offline) counts
  as wide.
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
# Narrower models compute in fp32 on a CPU even where bf16 is native (the module's docstring).
CPU_BF16_MIN_HIDDEN = 512
COMPUTE_DTYPE_HELP = (
    "dtype of the computation: auto (bf16 on a GPU with bf16, fp16 on an older GPU; on a CPU bf16 where it "
    f"is native and the model is at least {CPU_BF16_MIN_HIDDEN} wide, else fp32), bf16, fp16 or fp32"
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


def choose_compute_dtype(hardware: Hardware, hidden_size: int | None = None) -> torch.dtype:
    """bf16 on a GPU with bf16, fp16 on an older GPU; on a CPU, bf16 where it is native and the model
    (``hidden_size``; None: unknown, counted as wide) is at least ``CPU_BF16_MIN_HIDDEN`` wide, else fp32."""
    if hardware.cuda:
        return torch.bfloat16 if hardware.cuda_bf16 else torch.float16
    wide = hidden_size is None or hidden_size >= CPU_BF16_MIN_HIDDEN
    return torch.bfloat16 if hardware.cpu_native_bf16 and wide else torch.float32


def model_hidden_size(model_path: str | None) -> int | None:
    """The width of the model at ``model_path`` (its config's ``hidden_size``), or None if unreadable."""
    if not model_path:
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):  # a hub name offline, a folder without config: the caller's loader says why
        return None
    config = getattr(config, "get_text_config", lambda: config)()
    return getattr(config, "hidden_size", None)


@cache
def compute_dtype(name: str = "auto", model_path: str | None = None) -> torch.dtype:
    """The compute dtype for ``--compute_dtype NAME`` and the model at ``model_path``; logged once
    per process and model (cached)."""
    hardware = detect_hardware()
    if name == "auto":
        hidden_size = model_hidden_size(model_path)
        dtype = choose_compute_dtype(hardware, hidden_size)
        why = f"auto, model width {hidden_size}" if hidden_size else "auto"
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
