"""Offline generation (fcmistral/generation.py) on the tiny random model."""

from __future__ import annotations

import torch

from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.generation import generate_batch, load_for_generation
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt


def test_the_repetition_penalty_counts_the_reply_not_the_prompt(tiny_model_dir):
    """The random model repeats itself; under a strong penalty its replies repeat fewer tokens, and
    a token the prompt holds is still written: nothing of the prompt counts (a call copies its
    values from it)."""
    model, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def prompt(question: str) -> str:
        return generation_prompt(build_system_prompt(DEMO_SCHEMAS), [Turn("user", question)])

    (first,) = generate_batch(model, tokenizer, [prompt("hello")], max_new_tokens=1)
    prompts = [prompt(f"hello{first}"), prompt(f"What is{first} in Paris?")]  # the token, in the prompt
    assert all(ids(first)[0] in ids(p) for p in prompts)
    plain = generate_batch(model, tokenizer, prompts, max_new_tokens=40)
    penalized = generate_batch(model, tokenizer, prompts, max_new_tokens=40, repetition_penalty=100.0)

    def repeats(text: str) -> int:
        return len(ids(text)) - len(set(ids(text)))

    assert sum(map(repeats, penalized)) < sum(map(repeats, plain)), (plain, penalized)
    assert all(reply.startswith(first) for reply in plain + penalized), (first, plain, penalized)
