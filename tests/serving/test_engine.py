"""The batching engine (fcmistral/serving/engine/) on the tiny model: rows that join a running batch
generate what transformers' ``generate`` does for each prompt alone."""

from __future__ import annotations

import pytest
import torch

from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.serving.engine import BatchingEngine


@pytest.mark.slow
@pytest.mark.parametrize("sliding_window, idle_slots_steps", [
    (None, 128),  # the step's mask built by the engine
    (4096, 0),  # built by transformers; and the batch gives up free slots at once (a copy of its cache)
])
def test_rows_joining_a_running_batch_generate_what_generate_would(tiny_model_dir, sliding_window, idle_slots_steps,
                                                                   monkeypatch):
    """Rows join a running batch at different steps, of different lengths (padding), sharing the
    tools' prompt (computed once, then kept for later requests), some with a prompt seen before
    (only its last token left to compute): greedy replies equal transformers' ``generate`` on each
    prompt alone (fp32, so no rounding differs)."""
    import asyncio

    from fcmistral.generation import load_for_generation
    from fcmistral.prompt import Turn, build_system_prompt, generation_prompt
    from fcmistral.serving.engine import GenerationRequest

    model, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    torch.manual_seed(0)  # noisier weights: the random tiny model answers most prompts alike ("???")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.std().clamp(min=0.02) * 4)
    from fcmistral.serving.engine import slots

    monkeypatch.setattr(slots, "IDLE_SLOTS_STEPS", idle_slots_steps)
    model.config.sliding_window = sliding_window
    engine = BatchingEngine(model, tokenizer, max_batch_size=8)
    assert engine._own_step_mask == (sliding_window is None)
    system = build_system_prompt(DEMO_SCHEMAS)
    questions = ["What's the weather like in Paris?", "Convert 10 EUR to USD", "hi", "Tax on 50000 at 20%?",
                 "Weather in Oslo, in celsius please", "?", "Convert 10 EUR to USD", "What is 2+2?", "hi"]
    requests = [GenerationRequest(generation_prompt(system, [Turn("user", q)]), 10 + 3 * i)
                for i, q in enumerate(questions)]
    expected = []
    for request in requests:
        ids = torch.tensor([tokenizer(request.prompt).input_ids])
        out = model.generate(ids, max_new_tokens=request.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        expected.append(out[0, ids.shape[1]:].tolist())
    forwards = []
    forward = model.forward

    def counting(*args, **kwargs):
        forwards.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    model.forward = counting

    async def staggered() -> list:
        async def one(i: int, request):
            await asyncio.sleep(0.01 * (i % 3))  # three waves: later rows join a running batch
            return await engine.generate(request)
        return await asyncio.gather(*[one(i, r) for i, r in enumerate(requests)])

    assert len({tuple(tokens[:10]) for tokens in expected}) >= 3  # rows mixed up would show
    for update, tokens, request in zip(asyncio.run(staggered()), expected, requests):
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        assert update.prompt_tokens == len(tokenizer(request.prompt).input_ids)
        if update.finish_reason == "length":
            assert (update.text, update.completion_tokens) == (text, len(tokens))
        else:  # stopped at an end marker: the text before it
            assert update.finish_reason == "stop" and text.startswith(update.text.rstrip(" ")), (update.text, text)
    assert max(shape[0] for shape in forwards) > 1  # rows were computed side by side
    engine.close()  # an in-process engine stops its generation thread (it used to run until exit)
    assert not engine.alive()


@pytest.mark.parametrize("kind", ["tiny", "mistral-real"])
def test_a_reply_is_decoded_a_few_tokens_at_a_time_into_the_same_text(kind, tiny_tokenizer, request):
    """The engine decodes each new token in a small window (decoding the whole reply at every token
    was quadratic in its length), and the text equals the whole reply decoded at once, across
    sentencepiece spaces, digits and multi-byte characters."""
    from fcmistral.serving.engine.client import GenerationRequest
    from fcmistral.serving.engine.rows import Row, take

    tokenizer = tiny_tokenizer if kind == "tiny" else request.getfixturevalue("mistral_tokenizer")
    reply = ('It is 18°C in Zürich — "sunny" 🌞 today; <functioncall> {"name": "f", "arguments": '
             "'{\"x\": 12345}'} and more text after it, " * 6)
    ids = tokenizer(reply, add_special_tokens=False).input_ids
    windows = []
    decode = tokenizer.decode

    class Counting:
        eos_token_id = -1

        def decode(self, token_ids, **options):
            windows.append(len(token_ids))
            return decode(token_ids, **options)

    updates = []
    row = Row(GenerationRequest("", len(ids)), updates.append)
    for token in ids:
        take(row, token, Counting())
    assert "".join(u.text for u in updates) == decode(ids, skip_special_tokens=False)
    assert len(ids) > 150 and max(windows) <= 8


def test_greedy_rows_take_the_first_of_equal_best_logits():
    """Greedy choice reads bf16 logits as ``argmax`` does, ties to the first index and a NaN row
    to its NaN (the engine takes ``max``'s indices, faster on a CPU in bf16)."""
    from fcmistral.serving.engine.client import GenerationRequest
    from fcmistral.serving.engine.rows import Row, choose

    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (6, 4099), generator=generator).to(torch.bfloat16)  # many equal best values
    logits[1, :2000] = float("-inf")
    logits[2, 17] = float("nan")
    rows = [Row(GenerationRequest("", 4, temperature=0.0), lambda update: None) for _ in range(6)]
    tokens = choose([*rows[:3], None, *rows[4:]], logits.clone())
    assert tokens == logits.float().argmax(dim=-1).tolist()
    assert tokens[2] == 17 and len(set(tokens)) > 1
