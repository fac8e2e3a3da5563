"""LoRA on the loaded model: which layers get adapters, and preparing a 4-bit model for training."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def lora_config(r: int = 16, alpha: int = 64, dropout: float = 0.1):
    """LoRA on every linear layer except the output head (``all-linear``); embeddings untouched."""
    from peft import LoraConfig  # imported here: `import peft` costs seconds (it loads bitsandbytes)

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
        target_modules="all-linear", task_type="CAUSAL_LM",
    )


def wrap_lora(model, config, gradient_checkpointing: bool):
    """Prepare a (possibly 4-bit) model for training and add the LoRA adapters (``get_peft_model``
    freezes the base).

    Not peft's ``prepare_model_for_kbit_training`` for a 4-bit base: it casts every parameter that is
    not 4-bit (embeddings, norms, the head) to fp32, so the residual stream and every adapter's input
    run in fp32 whatever the compute dtype: more activation memory for no trained weight (those are
    frozen). TRL's SFTTrainer does not call it either. Measured (benchmarks/peer_training.py, SmolLM2,
    bf16): peak RSS 19-22% lower, dev loss 2-3% higher (bf16 rounding in the residual stream, one
    seed), speed within the machine's noise: docs/performance.md.
    """
    from peft import get_peft_model

    if gradient_checkpointing:
        model.activation_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable parameters of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model
