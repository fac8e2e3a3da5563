"""QLoRA model set-up: LoRA targets, and exact gradients after an evaluation pass on CPU."""

from __future__ import annotations

import pytest
import torch

from fcmistral.modeling import keep_4bit_backward_exact, load_model
from fcmistral.training.lora import lora_config, wrap_lora


def lora_gradients(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def eval_pass(model, batch) -> None:
    model.eval()
    with torch.no_grad():
        model(**batch)


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def qlora_model(request, tiny_model_dir, tiny_tokenizer):
    """The tiny QLoRA model computing in each dtype the hardware rule can pick on a CPU."""
    model = load_model(str(tiny_model_dir), load_in_4bit=True, tokenizer=tiny_tokenizer, dtype=request.param)
    torch.manual_seed(0)
    model = wrap_lora(model, lora_config(dropout=0.0), gradient_checkpointing=False)
    for name, param in model.named_parameters():  # non-zero B so that gradients reach A too
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


@pytest.fixture()
def batch(tiny_tokenizer):
    ids = tiny_tokenizer(["USER: What's the weather in Paris?\n\n\nASSISTANT: Let me check."], return_tensors="pt")
    return {"input_ids": ids["input_ids"], "labels": ids["input_ids"].clone()}


def test_lora_on_every_linear_layer_but_the_head(qlora_model):
    import bitsandbytes as bnb

    wrapped = {n.split(".")[-1] for n, m in qlora_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in qlora_model.modules())
    trainable = {n for n, p in qlora_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_gradients_after_an_evaluation_pass_equal_those_before(qlora_model, batch):
    before = lora_gradients(qlora_model, batch)
    eval_pass(qlora_model, batch)
    after = lora_gradients(qlora_model, batch)
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], msg=name)


def test_without_the_guard_this_cpu_corrupts_gradients(qlora_model, batch):
    """Shows that the test above can fail: the bitsandbytes repack really drops the backward."""
    from bitsandbytes.nn.modules import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    import bitsandbytes as bnb

    layers = [m for m in qlora_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    before = lora_gradients(qlora_model, batch)
    eval_pass(qlora_model, batch)
    after = lora_gradients(qlora_model, batch)
    assert any(not torch.allclose(after[n], before[n], rtol=1e-3, atol=1e-6) for n in before)
    assert keep_4bit_backward_exact(qlora_model) == len(layers)


def test_frozen_weights_keep_the_compute_dtype(tiny_model_dir, tiny_tokenizer):
    """peft's prepare_model_for_kbit_training cast the embeddings, norms and head to fp32, so the
    residual stream and every adapter input ran in fp32 (SmolLM2 in bf16: 19-22% more peak memory).
    The frozen weights now stay in the compute dtype; only the adapters are fp32 (peft's default)."""
    import bitsandbytes as bnb

    model = load_model(str(tiny_model_dir), load_in_4bit=True, tokenizer=tiny_tokenizer, dtype=torch.bfloat16)
    model = wrap_lora(model, lora_config(dropout=0.0), gradient_checkpointing=False)
    frozen = {p.dtype for p in model.parameters()
              if not p.requires_grad and not isinstance(p, bnb.nn.Params4bit)}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
