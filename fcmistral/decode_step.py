"""A decode step (one new token per row, with a KV cache) computed directly over a prepacked Llama or
Mistral model's weights, without transformers' forward: for the serving engine on a CPU.

Why: with the weights prepacked (fcmistral.prepacked), a decode step of a small model on a CPU is
no longer mostly products. Transformers' forward spends the rest on its Python (modules, kwargs,
output records, mask and position handling) and on small operators (SmolLM2-135M: ~2,000 operator
calls a step for 211 products). This step runs the same operators as transformers' Llama/Mistral
code in the same order and dtypes (same logits to the bit), minus the bookkeeping; the products are
the model's own, stacked ones (``SharedProduct``). Measured on SmolLM2-135M in bf16, 2-core AMD EPYC
Zen 4, 2026-12-04 (``benchmarks/decode_step.py``): see docs/performance.md.

It applies only where its operators are transformers' exactly: a ``llama`` or ``mistral`` model,
prepacked (bf16 on a CPU), attending with SDPA to all earlier tokens (no sliding window), with the
attention mask given as a boolean [rows, 1, 1, columns] tensor (the engine's own step mask).
Anything else keeps transformers' forward (``DecodeStep.for_model`` returns None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fcmistral.prepacked import ProductPart

ARCHITECTURES = ("llama", "mistral")


def attends_all_with_sdpa(config) -> bool:
    """Whether every layer of a model with ``config`` attends with SDPA to all earlier tokens (no
    sliding window): then a decode step's attention mask can be each row's own boolean mask, given
    as is (the serving engine's step mask), and this module's step applies to its architectures."""
    return (getattr(config, "_attn_implementation", None) == "sdpa"
            and getattr(config, "sliding_window", None) is None
            and set(getattr(config, "layer_types", None) or ()) <= {"full_attention"})


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """transformers' LlamaRMSNorm/MistralRMSNorm, operator for operator (float32 inside)."""
    hidden = x.to(torch.float32)
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * hidden.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' ``apply_rotary_pos_emb`` for one tensor (its ``rotate_half``)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class DecodeStep:
    """``step(tokens, positions, mask, cache)``: the next-token logits of every row (see the module
    docstring for where it applies)."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.model, self.decoder = model, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.layers = [(layer.input_layernorm, layer.self_attn.q_proj.shared, layer.self_attn.o_proj,
                        layer.post_attention_layernorm, layer.mlp.gate_proj.shared, layer.mlp.down_proj,
                        layer.self_attn.scaling)
                       for layer in self.decoder.layers]

    @classmethod
    def for_model(cls, model: nn.Module) -> DecodeStep | None:
        """The step for ``model``, or None where it does not apply (then use the model's forward)."""
        config = getattr(model, "config", None)
        decoder = getattr(model, "model", None)
        if (config is None or getattr(config, "model_type", None) not in ARCHITECTURES
                or not attends_all_with_sdpa(config) or getattr(config, "hidden_act", None) != "silu"
                or decoder is None or not hasattr(decoder, "layers")):
            return None
        for layer in decoder.layers:
            attention, mlp = layer.self_attn, layer.mlp
            parts = (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj)
            if not all(type(part) is ProductPart for part in parts) or not (
                    attention.q_proj.shared is attention.k_proj.shared is attention.v_proj.shared
                    and mlp.gate_proj.shared is mlp.up_proj.shared):
                return None  # not prepacked (fp32, a GPU, 4-bit, an adapter): transformers' forward
        return cls(model)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """``tokens`` and ``positions`` [rows, 1]; ``mask`` bool [rows, 1, 1, columns] over the cache's
        columns and the new one; ``cache`` a transformers ``Cache`` (updated in place). Returns the
        logits [rows, vocabulary]."""
        rows = tokens.shape[0]
        x = self.decoder.embed_tokens(tokens)
        cos, sin = self.decoder.rotary_emb(x, positions)
        cos, sin = cos[:, :, None], sin[:, :, None]  # [rows, 1, 1, head_dim]: broadcast over heads
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        rotated = (heads + kv_heads) * dim  # the product's query and key columns, side by side
        for index, (norm_in, qkv, out, norm_post, gate_up, down, scaling) in enumerate(self.layers):
            product = qkv.linear(_rms_norm(x, norm_in))
            # Queries and keys rotated in one go: the same operators per element as transformers'
            # two calls, half the operator calls.
            query_key = _rotate(product[..., :rotated].view(rows, 1, heads + kv_heads, dim), cos, sin)
            key = query_key[:, :, heads:].transpose(1, 2)
            value = product[..., rotated:].view(rows, 1, kv_heads, dim).transpose(1, 2)
            keys, values = cache.update(key, value, index)
            # One query per row: its heads grouped under their key/value head (transformers' pack_gqa).
            query = query_key[:, :, :heads].reshape(rows, kv_heads, heads // kv_heads, dim)
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling)
            x = x + out(attended.reshape(rows, 1, heads * dim))
            gate, up = gate_up(_rms_norm(x, norm_post))
            x = x + down(F.silu(gate) * up)
        return self.model.lm_head(_rms_norm(x, self.decoder.norm))[:, -1]
