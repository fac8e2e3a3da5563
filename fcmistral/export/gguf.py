"""A merged model folder as one GGUF file, for llama.cpp and Ollama, with the ``gguf`` package.

    python -m fcmistral.export.gguf --model_path outputs/merged --output outputs/model.gguf [--outtype q8_0]
    python convert_weights.py ... --save_path outputs/merged --gguf outputs/model.gguf   # merge, then export

Both also write an Ollama ``Modelfile`` beside the file (fcmistral.export.ollama).

What llama.cpp's ``convert_hf_to_gguf.py`` does for Llama/Mistral, restricted to what this project
writes (no llama.cpp checkout needed): the architecture ``llama`` (Mistral-7B-v0.1 is a Llama with
grouped-query attention, as llama.cpp writes it too), tensor names from gguf's own name map, the
q and k projections permuted to llama.cpp's rotary layout (``permute`` below), norms kept in
float32, the tokenizer (a byte-level BPE as ``gpt2`` with its merges; a sentencepiece-style BPE with
byte fallback, Mistral's, as ``llama`` with scores in merge order) and the chat template embedded.
``--outtype``: f16 (default), bf16, f32, or q8_0 (quantized by the gguf package itself).

The test reads the file back with transformers' GGUF loader, an independent reader that undoes the
permutation, and compares its logits and tokenizer with the folder's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from fcmistral.cli import run_cli
from fcmistral.errors import UserError
from fcmistral.export.ollama import write_modelfile

OUTTYPES = ("f16", "bf16", "f32", "q8_0")


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's layout of a q/k projection (its rotary embedding pairs neighbouring dimensions,
    Hugging Face's pairs the two halves of each head)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tokenizer_fields(folder: Path) -> dict:
    """The tokenizer.ggml.* values for the folder's tokenizer.json (see the module docstring)."""
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise UserError(f"{folder}: only BPE tokenizers can be exported to GGUF (found {model.get('type')})")
    vocab = dict(model["vocab"])
    added = {token["content"]: token for token in data.get("added_tokens", [])}
    for content, token in added.items():
        vocab.setdefault(content, token["id"])
    tokens = [None] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    if None in tokens:
        raise UserError(f"{folder}: the vocabulary has gaps; it cannot be written as a GGUF token list")
    kinds = []
    for token in tokens:
        if token in added and added[token].get("special"):
            kinds.append(2 if token == model.get("unk_token") else 3)  # UNKNOWN, CONTROL
        elif model.get("byte_fallback") and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            kinds.append(6)  # BYTE
        else:
            kinds.append(1)  # NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):  # sentencepiece-style: llama.cpp merges by score
        rank = {m.replace(" ", ""): i for i, m in enumerate(merges)}
        scores = [-float(rank.get(t, len(merges))) if kind == 1 else 0.0 for t, kind in zip(tokens, kinds)]
        return {"model": "llama", "pre": "default", "tokens": tokens, "types": kinds, "scores": scores}
    return {"model": "gpt2", "pre": "gpt-2", "tokens": tokens, "types": kinds, "merges": merges}


def _tensor(writer, name: str, array: np.ndarray, outtype: str) -> None:
    import gguf

    if array.ndim == 1 or outtype == "f32":  # norms stay float32, as llama.cpp writes them
        writer.add_tensor(name, array.astype(np.float32))
    elif outtype == "f16":
        writer.add_tensor(name, array.astype(np.float16))
    else:
        kind = {"bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]
        writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), kind), raw_dtype=kind)


def check_gguf_output(output: str | Path, overwrite: bool) -> None:
    """Refuse to replace the GGUF file or the Modelfile beside it unasked (checked before any work)."""
    if not str(output).endswith(".gguf"):
        raise UserError(f"{str(output)!r}: give a file name ending in .gguf")
    for path in (Path(output), Path(output).with_name("Modelfile")):
        if path.exists() and not overwrite:
            raise UserError(f"{str(path)!r} exists; pass --overwrite to replace it")


def export_gguf(model_path: str | Path, output: str | Path, outtype: str = "f16", overwrite: bool = False) -> Path:
    """Write ``model_path`` (a merged Llama/Mistral folder) as the GGUF file ``output``."""
    import gguf
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    folder, output = Path(model_path), Path(output)
    if outtype not in OUTTYPES:
        raise UserError(f"--outtype {outtype!r}: choose among {', '.join(OUTTYPES)}")
    if not (folder / "config.json").is_file():
        raise UserError(f"{str(folder)!r} is not a model folder (no config.json): merge first with convert_weights.py")
    check_gguf_output(output, overwrite)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in ("mistral", "llama"):
        raise UserError(f"only Mistral and Llama models can be exported (this one is {config.model_type!r})")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise UserError(f"{str(folder)!r} has no .safetensors weights")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fields = _tokenizer_fields(folder)

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, "llama")
    # Not the bare name "mistral": transformers would read the file back as Mistral, whose tensor names
    # gguf 0.19 does not map. As Llama it computes the same (Mistral's sliding window aside, 4,096 tokens).
    writer.add_name(folder.name if folder.name != "mistral" else "mistral-model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
    writer.add_tokenizer_model(fields["model"])
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    if "merges" in fields:
        writer.add_token_merges(fields["merges"])
    if "scores" in fields:
        writer.add_token_scores(fields["scores"])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    # From behaviour, not the attribute: a tokenizers-backed tokenizer may add BOS in its post-processor.
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    writer.add_add_bos_token(adds_bos)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    tied = bool(getattr(config, "tie_word_embeddings", False))
    for shard in shards:
        for hf_name, tensor in load_file(shard).items():
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp uses the embedding when there is no output tensor
            base, suffix = hf_name.rsplit(".", 1)
            name = names.get_name(base)
            if name is None:
                raise UserError(f"{hf_name}: no GGUF name for this tensor (not a plain Llama/Mistral model?)")
            array = tensor.to(torch.float32).numpy()
            if base.endswith("q_proj"):
                array = permute(array, heads, heads)
            elif base.endswith("k_proj"):
                array = permute(array, heads, kv_heads)
            _tensor(writer, f"{name}.{suffix}", array, outtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=True)
        writer.close()
        os.replace(partial, output)  # a file that exists is always complete
    finally:
        if partial.exists():
            partial.unlink()
    return output


def load_in_llama_cpp(path: str | Path, **options):
    """``path`` loaded in llama-cpp-python (``llama_cpp.Llama`` with ``options``) without llama.cpp's
    weight repacking, as ``llama-cli --no-repack`` runs: on Sapphire Rapids CPUs a native build repacks
    q8_0 weights for AMX, whose matrix product segfaults (ggml-org/llama.cpp#20824, seen here with
    llama-cpp-python 0.3.36 on the first forward pass of a SmolLM2 q8_0 export). What is checked through
    this (the export's numbers) does not depend on repacking. ``Llama`` has no parameter for it, so its
    default model parameters are given ``use_extra_bufts`` off for this one load."""
    import llama_cpp
    from llama_cpp import llama_cpp as native

    defaults = native.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_repacking
    try:
        return llama_cpp.Llama(model_path=str(path), **options)
    finally:
        native.llama_model_default_params = defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="merged model folder (convert_weights.py)")
    parser.add_argument("--output", required=True, help="the .gguf file to write")
    parser.add_argument("--outtype", default="f16", choices=OUTTYPES, help="tensor type of the matrices")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file and Modelfile")
    args = parser.parse_args()
    path = export_gguf(args.model_path, args.output, args.outtype, args.overwrite)
    print(path, write_modelfile(path, args.overwrite))


if __name__ == "__main__":
    run_cli(main)
