"""SmolLM2-135M-Instruct, rebuilt from its GGUF file as a normal model folder, is the same model:
it loads through the project's loaders like a hub model, computes what the GGUF-loaded model
computes, and answers as a pretrained instruct model does."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_the_folder_is_the_gguf_model_saved_plainly(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fcmistral.artifacts.smollm2 import GGUF_FILE, gguf_folder
    from fcmistral.modeling import load_model, load_tokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    tokenizer = load_tokenizer(str(smollm2_dir), padding_side="left")
    model = load_model(str(smollm2_dir), load_in_4bit=False, tokenizer=tokenizer, dtype=torch.float32).eval()
    assert 134_000_000 < model.num_parameters() < 135_000_000
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    reference = AutoModelForCausalLM.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    # The folder keeps SmolLM2's own ChatML template (load_tokenizer swaps in the glaive one for training).
    chatml = AutoTokenizer.from_pretrained(smollm2_dir)
    chat = [{"role": "user", "content": "What is 2+2?"}]
    batch = chatml.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, rtol=0, atol=1e-5)
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "4" in reply, reply  # a pretrained instruct model, not random weights


def test_the_end_marker_stays_one_token_where_the_vocabulary_has_it(smollm2_dir):
    """SmolLM2 has ``<|endoftext|>`` as a special token: text_encoder reads other special tokens'
    text as text, but the format's end marker stays the one token the model learns to write."""
    from fcmistral.modeling import load_tokenizer, text_encoder
    from fcmistral.prompt import END_OF_TURN

    tokenizer = load_tokenizer(str(smollm2_dir))
    marker = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    ids = text_encoder(tokenizer).encode(f"hi {END_OF_TURN} <|im_end|>", add_special_tokens=False).ids
    assert ids.count(marker) == 1 and tokenizer.convert_tokens_to_ids("<|im_end|>") not in ids
