"""Loading the tokenizer, the model (4-bit NF4 or full precision) and an adapter.

Below training, serving and evaluation, which all load models the same way."""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from fcmistral.chat_template import add_chat_template
from fcmistral.errors import UserError, first_line
from fcmistral.hardware import compute_dtype
from fcmistral.prompt import END_OF_TURN

log = logging.getLogger(__name__)
# A model -> named figures: what evaluation's probes compute and training's evaluations log (one type for
# both, here below them, as the trainer must not import the evaluation stage).
ModelMetrics = Callable[[torch.nn.Module], dict[str, float]]


def _load_error(what: str, path: str, err: Exception) -> UserError:
    hint = "" if Path(path).exists() else " (no such folder; a hub name needs network access or a local cache)"
    return UserError(f"cannot load the {what} from {path!r}{hint}: {first_line(err)}")


def load_tokenizer(path: str, padding_side: str = "right"):
    """The tokenizer, with a pad token that is never EOS.

    It carries the glaive chat template (fcmistral.chat_template), so every tokenizer a script
    saves (train.py's adapter and checkpoints, convert_weights.py, FSDP's best/ and final/) lets
    ``apply_chat_template`` render the training format; an instruct model's own template (SmolLM2's
    ChatML) is replaced, since the model is being taught the glaive format.

    Mistral-7B-v0.1 has no pad token. Using ``</s>`` as pad would mask the EOS labels, so the
    model would never learn to stop; ``<unk>`` is used instead (no new embedding row needed). Only
    a tokenizer with neither gets a new ``<pad>`` (see ``ensure_embeddings_fit``).
    """
    try:
        # mistral_format=False: with mistral-common installed, transformers would otherwise probe every
        # Mistral folder for Mistral's own tokenizer backend, which renders Mistral's chat format,
        # not this project's glaive template.
        tokenizer = AutoTokenizer.from_pretrained(path, mistral_format=False)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", path, err) from err
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.padding_side = padding_side
    add_chat_template(tokenizer)  # what this project trains and serves is the glaive format
    return tokenizer


@lru_cache(maxsize=8)  # per tokenizer object: building one parses the whole vocabulary
def text_encoder(tokenizer) -> Tokenizer:
    """A private copy of ``tokenizer``'s Rust tokenizer that reads every special token's *text* as
    text: a literal ``</s>`` or ``<s>`` in a reply (an HTML strikethrough) must not train, or end, a
    sequence. The real BOS is still added by id (the post-processor) and the EOS by id where a
    caller appends it. Only the format's own end marker stays one token where the vocabulary has
    it as a special one (SmolLM2's ``<|endoftext|>``), as the model is trained to write it.

    Every path that turns our text into ids uses it: training (``data.encoding``), the terminal
    chat and evaluation (``generation.generate_batch``) and the server (``EngineClient.encode``).
    A copy also keeps padding and truncation off whatever a transformers call left switched on.
    """
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    for added in data.get("added_tokens", []):
        if added["content"] == END_OF_TURN:
            added["special"] = False  # still matched whole, but not split by encode_special_tokens
    backend = Tokenizer.from_str(json.dumps(data))
    backend.no_padding()
    backend.no_truncation()
    backend.encode_special_tokens = True
    return backend


def tokenizer_source(model_path: str, adapter_path: str | None) -> str:
    """Where to load the tokenizer from: train.py saves it beside the adapter, and that copy wins
    (it may have gained a pad token); otherwise the base model's."""
    if adapter_path and Path(adapter_path, "tokenizer_config.json").is_file():
        return adapter_path
    return model_path


def nf4_config(compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """QLoRA's quantization: NF4 with double quantization, computing in ``compute_dtype``
    (bf16 where the hardware runs it natively; see fcmistral.hardware)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_model(path: str, load_in_4bit: bool, tokenizer=None, device_map=None, dtype: torch.dtype | None = None):
    """The causal LM from a hub name or a folder, in 4-bit NF4 or in full precision.

    ``dtype`` is the compute dtype: the 4-bit layers compute in it and every other weight is
    loaded in it. It defaults to the hardware's choice for this model (``compute_dtype("auto", path)``).

    Embeddings are resized here, before any PEFT wrap, when the tokenizer gained a token:
    resizing a wrapped model would leave the new rows outside the gradients.
    """
    dtype = dtype or compute_dtype("auto", path)
    kwargs = {"dtype": dtype}
    if load_in_4bit:
        kwargs["quantization_config"] = nf4_config(dtype)
        if device_map is None and torch.cuda.is_available():  # under torchrun: this rank's GPU
            device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, device_map=device_map, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error("model", path, err) from err
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    if load_in_4bit:
        keep_4bit_backward_exact(model)
    return model


def load_adapter(model, adapter_path: str):
    """``model`` with the LoRA adapter from ``adapter_path`` applied (for generation or merging).

    Every failure of PEFT's loader is caught here, broadly on purpose: a truncated or corrupt
    safetensors file, a config of another model, mismatched shapes all raise different library
    errors, and each means the same thing to a user: this folder is not an adapter for this model.
    (A folder without an adapter_config.json is refused earlier, by ModelArguments.)
    """
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter_path)
    except Exception as err:
        raise UserError(f"cannot load the LoRA adapter from {adapter_path!r}: {first_line(err)}") from err


def keep_4bit_backward_exact(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; return layers touched.

    On CPUs with AVX512-BF16, an eval-mode no-grad forward (the Trainer's evaluation) repacks
    ``Linear4bit`` weights into an inference layout after which the backward through them is
    silently wrong (LoRA gradients off by up to 68% while the loss still falls). Turning the
    feature off on every layer before any evaluation keeps training exact; GPUs are unaffected.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
