"""Linear layers with their weights laid out once for oneDNN, for generation on a CPU in bf16.

Why: a decode step multiplies one row per sequence by every weight matrix, and PyTorch's
``F.linear`` on a CPU reads a plain bf16 weight slowly there (SmolLM2's 576 -> 49,152 head at 8.7
GB/s, its 576 -> 1,536 products at ~27 GB/s, on a 2-core AMD EPYC Zen 4 with AVX512-BF16). oneDNN
reads the same weights reordered into its blocked layout 1.3-4x faster, with the same results to
the bit there (one product at a time, timed ad hoc on that machine, 2026-12-04; ``benchmarks/decode_step.py``
compares whole steps: 0.70x the time with one row, 0.85x with 8). The reorder is what
``torch.compile`` does to frozen linear weights on a CPU (inductor's mkldnn fusion); it is done
here directly, once at load, with the same operators, because a compiled decode step recompiles
for the changing shapes of a batching engine. Those operators are torch-internal
(``torch.ops.mkldnn``): where a torch build lacks them, nothing is changed.

Only bf16 on a CPU with native bf16 kernels: in fp32 the reordered weights were slower for some
shapes (1,536 -> 576: 121 us against 46 us), and emulated bf16 is never chosen for a CPU.

Layers that read the same input (a decoder layer's query/key/value projections, its MLP's gate and
up projections) are stacked into one product (``SharedProduct``): with a few rows, three products of
576 -> 576/192/192 cost far more than one of 576 -> 960 (SmolLM2-135M, 8 rows, the serving engine's
decode step of fcmistral.decode_step: 17.6-17.8 ms with them stacked against 21.3-24.2 ms without, timed
ad hoc on a 2-core AMD EPYC Zen 4, 2026-12-04; the same logits to the bit there). Not to the bit on every
CPU: on a 2-core Intel Xeon with AMX a stacked product's slice can differ from the layer's own product
in the last bit (each product alone is equal; the first difference in SmolLM2 is layer 1's key
projection, 2.4e-7), which grows to logits up to 1.2 apart (of ~24) after 32 decode steps, with the
same greedy tokens (docs/performance.md, 2026-12-05). Each layer is replaced by a ``ProductPart``
that reads its slice of the product, so the model's own forward (prefill, ``generate``) computes the
product once per input, and no weight is held twice.
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

    def __init__(self, *linears: nn.Linear) -> None:
        """One layer, or several that read the same input stacked into one (their outputs side by side)."""
        super().__init__()
        self.in_features, self.out_features = linears[0].in_features, sum(linear.out_features for linear in linears)
        weight = torch.cat([linear.weight.detach() for linear in linears]) if len(linears) > 1 else linears[0].weight
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        biases = [linear.bias.detach() for linear in linears if linear.bias is not None]
        bias = None if not biases else torch.cat(biases) if len(biases) > 1 else biases[0]
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SharedProduct(nn.Module):
    """One prepacked product for several linear layers that read the same input: their weights (and
    biases) stacked, the output split back into each layer's part.

    The product of an input is kept until each part has been read once (then dropped, so no layer's
    output outlives its use); a part read for another input, or read twice, computes the product
    again, so the result is right whatever order or inputs the model's code calls its layers with.
    Inference only, in one thread (the engine's generation thread, or evaluation's).
    """

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        self.sizes = [linear.out_features for linear in linears]
        self.linear = PrepackedLinear(*linears)
        self._input: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, ...] = ()
        self._unread: set[int] = set()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every part of ``x``'s product (views of one tensor)."""
        return self.linear(x).split(self.sizes, dim=-1)

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input or index not in self._unread:
            self._input, self._parts, self._unread = x, self.forward(x), set(range(len(self.sizes)))
        self._unread.discard(index)
        part = self._parts[index]
        if not self._unread:
            self._input, self._parts = None, ()
        return part


class ProductPart(nn.Module):
    """A linear layer computed as its part of a ``SharedProduct`` (keeps ``in_features`` and
    ``out_features`` for code that reads them)."""

    def __init__(self, shared: SharedProduct, index: int, in_features: int) -> None:
        super().__init__()
        self.shared, self.index = shared, index
        self.in_features, self.out_features = in_features, shared.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.part(x, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, part={self.index}"


# Layers of one module that read the same input, by name (Llama, Mistral, Qwen2 and their kin).
SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _prepackable(module: nn.Module | None) -> bool:
    # Exactly nn.Linear: subclasses (4-bit, LoRA) compute differently; and in bf16 (a 4-bit model's
    # head may keep another dtype).
    return type(module) is nn.Linear and is_cpu_bf16(module.weight)


def _stack_shared_inputs(parent: nn.Module) -> int:
    """Replace each group of ``SHARED_INPUTS`` among ``parent``'s children by the parts of one
    product; the number of layers replaced."""
    replaced = 0
    for names in SHARED_INPUTS:
        linears = [getattr(parent, name, None) for name in names]
        if not all(_prepackable(linear) for linear in linears) or len({
                (linear.in_features, linear.bias is None) for linear in linears}) != 1:
            continue
        shared = SharedProduct(linears)
        for index, (name, linear) in enumerate(zip(names, linears)):
            setattr(parent, name, ProductPart(shared, index, linear.in_features))
        replaced += len(names)
    return replaced


def can_prepack(model: nn.Module) -> bool:
    """Whether ``model`` computes where prepacking pays: bf16 on a CPU with native bf16 kernels."""
    weight = next(model.parameters(), None)
    return (weight is not None and is_cpu_bf16(weight)
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and detect_hardware().cpu_native_bf16)


def is_cpu_bf16(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype == torch.bfloat16


def prepack_linears(model: nn.Module) -> int:
    """Replace every plain ``nn.Linear`` of ``model`` (an inference model, no adapter layers) by a
    ``PrepackedLinear``, or by its part of a ``SharedProduct`` (layers that read the same input),
    where ``can_prepack``; the number replaced.

    The output head of a model with tied embeddings gets its own packed copy (the embedding keeps
    the plain one): SmolLM2-135M's head is 56 MB in bf16.
    """
    if not can_prepack(model):
        return 0
    replaced = 0
    for parent in list(model.modules()):
        replaced += _stack_shared_inputs(parent)
        for name, child in list(parent.named_children()):
            if _prepackable(child):
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
