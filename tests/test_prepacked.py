"""oneDNN-prepacked linear layers (fcmistral/prepacked.py): the same results as the plain layers,
applied only where they pay (bf16 on a CPU with native bf16) and never under an adapter."""

from __future__ import annotations

import torch
from torch import nn

from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.generation import generate_batch, load_for_generation
from fcmistral.prepacked import PrepackedLinear, ProductPart, SharedProduct, can_prepack, prepack_linears
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt
from tests.conftest import native_bf16


def count(model: nn.Module, kind: type) -> int:
    return sum(type(module) is kind for module in model.modules())


@native_bf16
def test_a_prepacked_layer_computes_what_the_plain_one_does():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = nn.Linear(96, 200, bias=bias).to(torch.bfloat16)
        x = torch.randn(3, 7, 96, dtype=torch.bfloat16)
        with torch.inference_mode():
            assert torch.equal(PrepackedLinear(linear)(x), linear(x))
            assert PrepackedLinear(linear)(x[:, :0]).shape == (3, 0, 200)


@native_bf16
def test_layers_that_read_one_input_share_one_product_and_each_gets_its_part():
    torch.manual_seed(0)
    linears = [nn.Linear(64, size, bias=True).to(torch.bfloat16) for size in (96, 32, 32)]
    shared = SharedProduct(linears)
    parts = [ProductPart(shared, i, 64) for i in range(3)]
    x, y = torch.randn(2, 5, 64, dtype=torch.bfloat16), torch.randn(3, 1, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert [tuple(part(x).shape) for part in parts] == [(2, 5, 96), (2, 5, 32), (2, 5, 32)]
        assert shared._parts == ()  # every part read: the product is not kept
        # In any order, with inputs that change between parts, or a part read twice: still each layer's output.
        for part, inputs in ((parts[2], x), (parts[0], y), (parts[0], y), (parts[1], x), (parts[2], y)):
            assert torch.equal(part(inputs), linears[part.index](inputs))


@native_bf16
def test_generation_loads_bf16_models_prepacked_and_writes_the_same_replies(tiny_model_dir):
    plain, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.bfloat16, prepack=False)
    prepacked, _ = load_for_generation(str(tiny_model_dir), dtype=torch.bfloat16)
    layers = plain.config.num_hidden_layers
    assert count(plain, nn.Linear) == 7 * layers + 1 and count(prepacked, nn.Linear) == 0
    # q/k/v and gate/up: parts of one product each; o, down and the head: prepacked alone.
    assert count(prepacked, ProductPart) == 5 * layers and count(prepacked, SharedProduct) == 2 * layers
    assert count(prepacked, PrepackedLinear) == 2 * layers + 2 * layers + 1
    prompts = [generation_prompt(build_system_prompt(DEMO_SCHEMAS), [Turn("user", question)])
               for question in ("What is the weather in Paris?", "hello", "Convert 10 USD to EUR, please.")]
    ids = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.equal(plain(**ids).logits, prepacked(**ids).logits)
    assert generate_batch(prepacked, tokenizer, prompts, max_new_tokens=24) == \
        generate_batch(plain, tokenizer, prompts, max_new_tokens=24)


def test_fp32_models_and_adapters_stay_plain(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    fp32, _ = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    assert not can_prepack(fp32) and prepack_linears(fp32) == 0 and count(fp32, PrepackedLinear) == 0
    adapter = tmp_path / "adapter"
    get_peft_model(fp32, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    with_adapter, _ = load_for_generation(str(tiny_model_dir), str(adapter), dtype=torch.bfloat16)
    assert count(with_adapter, PrepackedLinear) == 0


@native_bf16
def test_a_4bit_model_keeps_its_quantized_layers_and_writes_the_same_replies(tiny_model_dir):
    plain, tokenizer = load_for_generation(str(tiny_model_dir), load_in_4bit=True, dtype=torch.bfloat16,
                                           prepack=False)
    prepacked, _ = load_for_generation(str(tiny_model_dir), load_in_4bit=True, dtype=torch.bfloat16)
    kinds = {type(module).__name__ for module in prepacked.modules()}
    assert "Linear4bit" in kinds, kinds
    prompts = [generation_prompt(build_system_prompt(DEMO_SCHEMAS), [Turn("user", "What is the weather in Oslo?")])]
    assert generate_batch(prepacked, tokenizer, prompts, max_new_tokens=16) == \
        generate_batch(plain, tokenizer, prompts, max_new_tokens=16)
