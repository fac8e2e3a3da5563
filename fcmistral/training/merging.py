"""Merging a LoRA adapter into its base model, through public PEFT/transformers APIs only."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fcmistral.errors import UserError, first_line
from fcmistral.hardware import DTYPE_NAMES
from fcmistral.modeling import load_adapter, load_model, load_tokenizer, tokenizer_source
from fcmistral.outputs import check_output_dir, written_aside

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _base_dtype(model_path: str) -> torch.dtype:
    """The dtype the base was saved in (bf16 for Mistral-7B), fp32 when the config does not say."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the model config from {model_path!r}: {first_line(err)}") from err
    name = str(getattr(config, "dtype", None) or "float32").replace("torch.", "")
    return DTYPES.get(name, torch.float32)


def merge_adapter(model_path: str, adapter_path: str, into_dequantized: bool = False, dtype: str = "auto",
                  compute_dtype: torch.dtype | None = None):
    """The merged model and its tokenizer.

    Default: the adapter is merged into the full-precision base weights. ``into_dequantized``:
    into the NF4-dequantized weights the adapter was trained against, via transformers' public ``dequantize()`` rather than bitsandbytes internals; the 4-bit model
    is loaded with ``compute_dtype`` as in training (default: the hardware's choice).
    """
    target = _base_dtype(model_path) if dtype == "auto" else DTYPE_NAMES[dtype]
    tokenizer = load_tokenizer(tokenizer_source(model_path, adapter_path))
    if into_dequantized:
        base = load_model(model_path, load_in_4bit=True, tokenizer=tokenizer, dtype=compute_dtype).dequantize().to(torch.float32)
    else:
        base = load_model(model_path, load_in_4bit=False, tokenizer=tokenizer, dtype=torch.float32)
    merged = load_adapter(base, adapter_path).merge_and_unload()  # merged in fp32, then cast
    merged = merged.to(target)
    merged.config.dtype = target
    return merged, tokenizer


def check_save_path(save_path: str, overwrite: bool) -> Path:
    """Refuse to replace a non-empty folder unless asked (checked before minutes of loading, too)."""
    return check_output_dir(save_path, "--save_path", overwrite, "pass --overwrite to replace it")


def save_merged(model, tokenizer, save_path: str, overwrite: bool = False) -> Path:
    """Write model (safetensors) and tokenizer; ``save_path`` is at every instant the old folder or
    the new one, complete (see fcmistral.outputs.written_aside)."""
    out = check_save_path(save_path, overwrite)
    with written_aside(out) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = json.loads((staging / "config.json").read_text())
        if "quantization_config" in config:
            raise UserError("internal error: the merged config still has a quantization entry")
    return out
