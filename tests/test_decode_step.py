"""The direct decode step (fcmistral/decode_step.py): the logits of transformers' forward to the bit,
where it applies (a prepacked Llama/Mistral model), and transformers' forward everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from fcmistral.decode_step import DecodeStep
from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.generation import load_for_generation
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt
from fcmistral.serving.engine.slots import slot_cache
from tests.conftest import native_bf16

QUESTIONS = ("What is the weather in Paris?", "hi", "Convert 10 USD to EUR, please, and then tell me a joke.")


def noisy_bf16_model(tiny_model_dir):
    """The tiny model in bf16, prepacked, with noisier weights (the random tiny model answers most
    prompts alike), so rows differ and a mixed-up row would show."""
    plain, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32, prepack=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.std().clamp(min=0.02) * 4)
    from fcmistral.prepacked import prepack_linears

    model = plain.to(torch.bfloat16)
    assert prepack_linears(model) > 0
    return model, tokenizer


@native_bf16
@pytest.mark.parametrize("slots", [False, True])
def test_the_step_computes_transformers_logits_to_the_bit(tiny_model_dir, slots):
    """Three left-padded rows, 12 steps each way from the same prompt cache (a plain DynamicCache,
    or the engine's slot cache with its room of spare columns): the same logits, bit for bit."""
    model, tokenizer = noisy_bf16_model(tiny_model_dir)
    step = DecodeStep.for_model(model)
    assert step is not None
    prompts = [generation_prompt(build_system_prompt(DEMO_SCHEMAS), [Turn("user", q)]) for q in QUESTIONS]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    runs = []
    with torch.inference_mode():
        for direct in (False, True):
            cache, mask = DynamicCache(), batch.attention_mask
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(**batch, position_ids=positions, past_key_values=cache, use_cache=True).logits[:, -1]
            if slots:
                cache = slot_cache(cache)
            position, steps = positions[:, -1:], []
            for _ in range(12):
                token = logits.argmax(-1, keepdim=True)
                mask, position = F.pad(mask, (0, 1), value=1), position + 1
                own_mask = mask.bool()[:, None, None, :]
                logits = step(token, position, own_mask, cache) if direct else model(
                    input_ids=token, attention_mask=own_mask, position_ids=position, past_key_values=cache,
                    use_cache=True).logits[:, -1]
                steps.append(logits)
            runs.append(torch.stack(steps))
    assert torch.equal(runs[0], runs[1])
    tokens = runs[0].argmax(-1)
    assert len({tuple(row) for row in tokens.T.tolist()}) == len(QUESTIONS)  # the rows differ


def test_models_it_does_not_fit_keep_transformers_forward(tiny_model_dir):
    fp32, _ = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    assert DecodeStep.for_model(fp32) is None  # not prepacked
    plain_bf16, _ = load_for_generation(str(tiny_model_dir), dtype=torch.bfloat16, prepack=False)
    assert DecodeStep.for_model(plain_bf16) is None


@native_bf16
def test_a_sliding_window_or_another_architecture_keeps_transformers_forward(tiny_model_dir):
    model, _ = load_for_generation(str(tiny_model_dir), dtype=torch.bfloat16)
    assert DecodeStep.for_model(model) is not None
    model.config.sliding_window = 4096
    assert DecodeStep.for_model(model) is None
    model.config.sliding_window = None
    model.config.model_type = "gemma"
    assert DecodeStep.for_model(model) is None


@native_bf16
def test_the_engine_steps_with_it_and_replies_as_with_transformers_forward(tiny_model_dir, monkeypatch):
    """The serving engine on a prepacked model takes the direct step, and its replies (one request
    at a time, so the batches are the same) are those of the engine with transformers' forward."""
    import asyncio

    from fcmistral.serving.engine import BatchingEngine, GenerationRequest

    model, tokenizer = noisy_bf16_model(tiny_model_dir)
    system = build_system_prompt(DEMO_SCHEMAS)
    requests = [GenerationRequest(generation_prompt(system, [Turn("user", q)]), 16) for q in QUESTIONS]
    calls = []
    real_call = DecodeStep.__call__

    def counted(self, *args):
        calls.append(args[0].shape[0])
        return real_call(self, *args)

    monkeypatch.setattr(DecodeStep, "__call__", counted)
    replies = {}
    for direct in (True, False):
        engine = BatchingEngine(model, tokenizer, max_batch_size=4)
        if not direct:
            engine._decode = None
        assert (engine._decode is not None) == direct
        replies[direct] = [asyncio.run(engine.generate(request)).text for request in requests]
        engine.close()
    assert calls and replies[True] == replies[False]
    assert len(set(replies[True])) == len(QUESTIONS)
