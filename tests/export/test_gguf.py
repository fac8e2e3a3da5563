"""GGUF export read back by transformers' GGUF loader (an independent reader). The Ollama Modelfile's
template is executed by Go itself in tests/export/test_ollama.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcmistral.errors import UserError
from fcmistral.export import gguf as gguf_export
from tests.conftest import run_script

pytest.importorskip("gguf", reason="the gguf package is not installed")

TEXTS = ["USER: What's the weather like in Zürich? ☀\n\n\nASSISTANT: <functioncall> {\"name\": \"get_weather\"}",
         "FUNCTION RESPONSE: {\"temperature\": 18, \"unit\": \"celsius\"}", "Tab\tand é, 漢字 🙂"]


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
@pytest.mark.parametrize("outtype, tolerance", [("f32", 1e-5), ("f16", 1e-2), ("bf16", 5e-2), ("q8_0", 1e-1)])
def test_gguf_reads_back_with_the_same_logits_and_tokens(tiny_model_dir, tmp_path, outtype, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_export.export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", outtype)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    again_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS:  # the reader adds no BOS for a byte-level vocabulary; llama.cpp follows add_bos_token
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert again_tokenizer(text, add_special_tokens=False).input_ids == ids
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    reference = logits(model, ids)
    difference = (logits(again, ids) - reference).abs().max().item()
    assert difference <= tolerance * reference.abs().max().item()
    assert again_tokenizer.chat_template == tokenizer.chat_template


@pytest.mark.slow
def test_without_the_qk_permutation_the_logits_differ(tiny_model_dir, tmp_path, monkeypatch):
    """The round trip above is exact only because the file holds llama.cpp's q/k layout, which the
    reader undoes: written without it, the model computes something else."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(gguf_export, "permute", lambda weights, *heads: weights)
    path = gguf_export.export_gguf(tiny_model_dir, tmp_path / "plain.gguf", "f32")
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(TEXTS[0], return_tensors="pt").input_ids
    reference = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), ids)
    wrong = logits(AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32), ids)
    assert (wrong - reference).abs().max().item() > 1e-3


def test_sentencepiece_vocabulary_is_written_as_llama_type(mistral_tokenizer, tiny_model_dir, tmp_path):
    """Mistral's real tokenizer: every piece in id order, bytes typed BYTE, <s> </s> CONTROL, <unk>
    UNKNOWN, scores in merge order (llama.cpp's SPM tokenizer merges by score)."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size = len(mistral_tokenizer)
    folder = tmp_path / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    mistral_tokenizer.save_pretrained(folder)
    reader = gguf.GGUFReader(gguf_export.export_gguf(folder, tmp_path / "m.gguf", "f16"))

    def field(name):
        f = reader.fields[name]
        return [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()

    vocab = mistral_tokenizer.get_vocab()
    assert field("tokenizer.ggml.model") == "llama"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 32000 and all(vocab[t] == i for i, t in enumerate(tokens))
    types = field("tokenizer.ggml.token_type")
    assert types[:3] == [2, 3, 3] and types.count(6) == 256 and tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    scores = np.array(field("tokenizer.ggml.scores"))
    assert scores[vocab["▁t"]] > scores[vocab["▁the"]] > scores[vocab["▁there"]]  # built from earlier merges
    assert field("tokenizer.ggml.bos_token_id") == 1 and field("tokenizer.ggml.add_bos_token") is True


def test_export_refuses_what_it_should(tmp_path, tiny_model_dir):
    (tmp_path / "taken.gguf").write_text("keep me")
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        gguf_export.export_gguf(tiny_model_dir, tmp_path / "taken.gguf")
    assert (tmp_path / "taken.gguf").read_text() == "keep me"
    with pytest.raises(UserError, match="not a model folder"):
        gguf_export.export_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "Modelfile").write_text("mine")
    result = run_script("fcmistral/export/gguf.py", "--model_path", str(tiny_model_dir), "--output",
                        str(tmp_path / "new.gguf"))  # the Modelfile beside it would be replaced
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Modelfile' exists" in result.stderr
    assert not (tmp_path / "new.gguf").exists() and (tmp_path / "Modelfile").read_text() == "mine"
