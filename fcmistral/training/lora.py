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


def wrap_lora(model, config, quantized: bool, gradient_checkpointing: bool):
    """Prepare a (possibly 4-bit) model for training and add the LoRA adapters."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable parameters of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model
