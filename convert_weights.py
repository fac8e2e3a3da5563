"""Merge a LoRA adapter into its base model and save a normal model folder (with the tokenizer).

    python convert_weights.py --model_path mistralai/Mistral-7B-v0.1 --adapter_path outputs/qlora \\
        --save_path outputs/merged

The result loads with ``AutoModelForCausalLM.from_pretrained`` without PEFT. Merging into a 4-bit
model would degrade it, so the default merges into the full-precision base;
``--merge_into_dequantized`` merges into the NF4-dequantized weights the adapter was trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fcmistral.cli import run_cli  # isort: skip  (first: quiets a bitsandbytes import warning)
from transformers import HfArgumentParser

from fcmistral.hardware import COMPUTE_DTYPE_CHOICES, COMPUTE_DTYPE_HELP, compute_dtype
from fcmistral.merging import check_save_path, merge_adapter, save_merged

log = logging.getLogger("convert_weights")


@dataclass
class ConvertArguments:
    model_path: str = field(metadata={"help": "the base model the adapter was trained on: hub name or folder"})
    adapter_path: str = field(metadata={"help": "the adapter folder written by train.py"})
    save_path: str = field(metadata={"help": "folder for the merged model"})
    merge_into_dequantized: bool = field(
        default=False, metadata={"help": "merge into the NF4-dequantized base instead of the full-precision one"}
    )
    dtype: str = field(
        default="auto", metadata={"help": "saved dtype: auto (the base's), bfloat16, float16 or float32",
                                  "choices": ["auto", "bfloat16", "float16", "float32"]}
    )
    compute_dtype: str = field(default="auto", metadata={
        "help": "with --merge_into_dequantized, the dtype the 4-bit base is loaded with, as in training: " + COMPUTE_DTYPE_HELP,
        "choices": COMPUTE_DTYPE_CHOICES})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --save_path"})


def main() -> None:
    (args,) = HfArgumentParser(ConvertArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses()
    check_save_path(args.save_path, args.overwrite)
    model, tokenizer = merge_adapter(args.model_path, args.adapter_path, args.merge_into_dequantized, args.dtype,
                                     compute_dtype(args.compute_dtype) if args.merge_into_dequantized else None)
    save_merged(model, tokenizer, args.save_path, args.overwrite)
    log.info("merged model and tokenizer saved to %s", args.save_path)


if __name__ == "__main__":
    run_cli(main)
