"""Turning our text into ids (fcmistral.modeling.text_encoder): a special token's text in a
message is text on every path that tokenizes for the model (training is tested in
tests/data/test_labels.py)."""

from __future__ import annotations

import pytest
import torch

from fcmistral.serving.engine import EngineClient

PROMPT = "USER: is <s>old</s> new? </s> <s> <unk>\n\n\nASSISTANT:"


class Encoder(EngineClient):
    """The engine client's encode alone (what the server checks and queues as the prompt's ids)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def start(self, request, streamed, updates):
        raise NotImplementedError

    def alive(self) -> bool:
        return True


def specials(tokenizer) -> set[int]:
    return {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}


@pytest.mark.parametrize("kind", ["tiny", "mistral-real"])
def test_the_server_reads_special_tokens_in_a_prompt_as_text(kind, tiny_tokenizer, request):
    tokenizer = tiny_tokenizer if kind == "tiny" else request.getfixturevalue("mistral_tokenizer")
    ids = Encoder(tokenizer).encode(PROMPT)
    assert [i for i in ids if i in specials(tokenizer)] == [tokenizer.bos_token_id] and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT


def test_generation_reads_special_tokens_in_a_prompt_as_text_and_pads_left(tiny_model_dir):
    from fcmistral.generation import generate_batch, load_for_generation

    model, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    seen = {}

    def generate(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"]

    model.generate = generate
    generate_batch(model, tokenizer, [PROMPT, "USER: hi\n\n\nASSISTANT:"], max_new_tokens=2)
    rows, mask = seen["input_ids"].tolist(), seen["attention_mask"].tolist()
    assert [[t for t, m in zip(r, ms) if m and t in specials(tokenizer)] for r, ms in zip(rows, mask)] == \
        [[tokenizer.bos_token_id]] * 2
    assert tokenizer.decode(rows[0], skip_special_tokens=True) == PROMPT
    plain = tokenizer(["USER: hi\n\n\nASSISTANT:"]).input_ids[0]
    assert rows[1][-len(plain):] == plain and mask[1] == [0] * (len(rows[1]) - len(plain)) + [1] * len(plain)
