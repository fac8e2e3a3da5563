"""Linear layers with their weights laid out once for oneDNN, for generation on a CPU in bf16.

Why: a decode step multiplies one row per sequence by every weight matrix, and PyTorch's
``F.linear`` on a CPU reads a plain bf16 weight slowly there (SmolLM2's 576 -> 49,152 head at 8.7
GB/s, its 576 -> 1,536 products at ~27 GB/s, on a 2-core AMD EPYC Zen 4 with AVX512-BF16). oneDNN
reads the same weights reordered into its blocked layout 1.3-4x faster, with the same results to
the bit (one product at a time, timed ad hoc on that machine, 2026-12-04; ``benchmarks/decode_step.py``
compares whole steps: 0.70x the time with one row, 0.85x with 8). The reorder is what
``torch.compile`` does to frozen linear weights on a CPU (inductor's mkldnn fusion); it is done
here directly, once at load, with the same operators, because a compiled decode step recompiles
for the changing shapes of a batching engine. Those operators are torch-internal
(``torch.ops.mkldnn``): where a torch build lacks them, nothing is changed.

Only bf16 on a CPU with native bf16 kernels: in fp32 the reordered weights were slower for some
shapes (1,536 -> 576: 121 us against 46 us), and emulated bf16 is never chosen for a CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch
from torch import nn

from fcmistral.hardware import detect_hardware

log = logging.getLogger(__name__)


class PrepackedLinear(nn.Module):
    """``nn.Linear``'s forward over a weight reordered once for oneDNN (inference only: no grad).

    The plain weight is dropped (it would double the memory); the module keeps ``in_features``
    and ``out_features`` for code that reads them.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_prepack(model: nn.Module) -> bool:
    """Whether ``model`` computes where prepacking pays: bf16 on a CPU with native bf16 kernels."""
    weight = next(model.parameters(), None)
    return (weight is not None and is_cpu_bf16(weight)
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and detect_hardware().cpu_native_bf16)


def is_cpu_bf16(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype == torch.bfloat16


def prepack_linears(model: nn.Module) -> int:
    """Replace every plain ``nn.Linear`` of ``model`` (an inference model, no adapter layers) by a
    ``PrepackedLinear`` where ``can_prepack``; the number replaced.

    The output head of a model with tied embeddings gets its own packed copy (the embedding keeps
    the plain one): SmolLM2-135M's head is 56 MB in bf16.
    """
    if not can_prepack(model):
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            # Exactly nn.Linear: subclasses (4-bit, LoRA) compute differently; and in bf16 (a 4-bit
            # model's head may keep another dtype).
            if type(child) is nn.Linear and is_cpu_bf16(child.weight):
                setattr(parent, name, PrepackedLinear(child))
                replaced += 1
    release_freed_memory()
    log.info("%d linear layers prepacked for oneDNN (bf16 on a CPU)", replaced)
    return replaced


def release_freed_memory() -> None:
    """Give the memory of the dropped plain weights back to the system.

    glibc keeps large freed blocks for reuse: without this, the process held the plain and the
    packed weights at once (SmolLM2-135M: 884 MiB resident against 683 MiB after the trim). Where
    the C library has no ``malloc_trim`` (not glibc), nothing is done.
    """
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)
