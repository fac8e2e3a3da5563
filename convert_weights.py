"""Merge a LoRA adapter into its base model and save a normal model folder (with the tokenizer).

    python convert_weights.py --model_path mistralai/Mistral-7B-v0.1 --adapter_path outputs/qlora \\
        --save_path outputs/merged [--gguf outputs/model.gguf --gguf_type q8_0]

The result loads with ``AutoModelForCausalLM.from_pretrained`` without PEFT. Merging into a 4-bit
model would degrade it, so the default merges into the full-precision base;
``--load_in_4bit`` loads the base as QLoRA trained it and merges into its NF4-dequantized weights.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from fcmistral.arguments import ModelArguments, parse_arguments
from fcmistral.cli import run_cli
from fcmistral.errors import UserError
from fcmistral.export.gguf import OUTTYPES, check_gguf_output, export_gguf
from fcmistral.export.ollama import write_modelfile
from fcmistral.hardware import compute_dtype
from fcmistral.training.merging import check_save_path, merge_adapter, save_merged

log = logging.getLogger("convert_weights")


@dataclass
class ConvertArguments:
    """This script's options; the model's are fcmistral.arguments.ModelArguments, where
    ``--load_in_4bit`` means: merge into the NF4-dequantized base the adapter was trained on."""

    save_path: str = field(default=None, metadata={"help": "folder for the merged model"})
    dtype: str = field(
        default="auto", metadata={"help": "saved dtype: auto (the base's), bf16, fp16 or fp32",
                                  "choices": ["auto", "bf16", "fp16", "fp32"]}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --save_path (and --gguf file)"})
    gguf: str = field(default=None, metadata={"help": "also write the merged model as this GGUF file (llama.cpp, "
                                                      "Ollama; see fcmistral.export.gguf)"})
    gguf_type: str = field(default="f16", metadata={"help": "GGUF tensor type", "choices": list(OUTTYPES)})


def main() -> None:
    old = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # the old spellings, kept hidden
    if any(a == "--dtype" and b in old for a, b in zip(sys.argv, sys.argv[1:])):
        log.warning("--dtype takes bf16, fp16 or fp32, as --compute_dtype does (bfloat16 etc. are old names)")
        sys.argv = [old.get(b, b) if a == "--dtype" else b for a, b in zip(["", *sys.argv], sys.argv)]
    model_args, args = parse_arguments((ModelArguments, ConvertArguments), __doc__.split("\n\n")[0])
    missing = [f"--{name}" for name, value in (("model_path", model_args.model_path),
                                               ("adapter_path", model_args.adapter_path),
                                               ("save_path", args.save_path)) if not value]
    if missing:
        raise UserError(f"the following arguments are required: {', '.join(missing)}")
    check_save_path(args.save_path, args.overwrite)
    if args.gguf:
        check_gguf_output(args.gguf, args.overwrite)
    into_dequantized = model_args.load_in_4bit
    model, tokenizer = merge_adapter(model_args.model_path, model_args.adapter_path, into_dequantized, args.dtype,
                                     compute_dtype(model_args.compute_dtype, model_args.model_path) if into_dequantized else None)
    save_merged(model, tokenizer, args.save_path, args.overwrite)
    log.info("merged model and tokenizer saved to %s", args.save_path)
    if args.gguf:
        path = export_gguf(args.save_path, args.gguf, args.gguf_type, args.overwrite)
        log.info("GGUF (%s) written to %s, Ollama Modelfile to %s", args.gguf_type, path,
                 write_modelfile(path, args.overwrite))


if __name__ == "__main__":
    run_cli(main)
