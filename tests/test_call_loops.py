"""The penalty on loops inside a call (fcmistral/call_loops.py), under the tiny and Mistral's real tokenizers."""

from __future__ import annotations

import pytest
import torch

from fcmistral.call_loops import repeat_lengths
from fcmistral.constraint import CallConstraint, Guides, Loops, adjust_rows
from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.generation import generate_batch, load_for_generation
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt


def test_repeat_lengths_are_the_longest_sequences_the_next_token_would_extend():
    assert repeat_lengths([1, 2, 3, 1, 2]) == {3: 2}
    assert repeat_lengths([5, 1, 2, 3, 9, 1, 2, 4, 1, 2]) == {3: 2, 4: 2}
    assert repeat_lengths([7, 7, 7, 7]) == {7: 3}  # overlapping, as DRY counts a run of one token
    assert repeat_lengths([1, 2, 3]) == {}


def penalties(tokenizer, reply: str, multiplier: float = 0.8, written: str = "") -> dict[str, float]:
    """What a row's guide takes off each token's logit after ``reply`` (the row takes its tokens one
    by one, as generation gives them), by the token's text."""
    guide = Guides(tokenizer, len(tokenizer)).guide(CallConstraint(loop_penalty=multiplier, written=written))
    for token in tokenizer(reply, add_special_tokens=False).input_ids:
        guide.take(token)
    logits = torch.zeros(1, len(tokenizer))
    adjust_rows([guide], logits)
    return {tokenizer.decode([i]): -float(logits[0, i]) for i in torch.nonzero(logits[0]).flatten().tolist()}


CALL = ' <functioncall> {"name": "stats", "arguments": \'{"data": ['


@pytest.mark.parametrize("tokenizer_name", ["tiny_tokenizer", "mistral_tokenizer"])
def test_a_loop_inside_a_call_is_lowered_and_grows(tokenizer_name, request):
    tokenizer = request.getfixturevalue(tokenizer_name)
    looping = CALL + "85, 91, 92, 91, 92, 91, 92, 91, 92"
    lowered = penalties(tokenizer, looping)
    assert lowered and max(lowered.values()) > 10, lowered  # the loop's next token, exponentially
    longer = penalties(tokenizer, looping + ", 91, 92")
    assert max(longer.values()) > max(lowered.values())
    # No quote breaks a match: loops of strings too, more at each turn.
    item = '"Stranger Things", '
    twice, thrice = (penalties(tokenizer, CALL + item * n + '"Stranger') for n in (2, 3))
    assert max(thrice.values()) > max(twice.values(), default=0) and max(thrice.values()) > 5, (twice, thrice)


@pytest.mark.parametrize("tokenizer_name", ["tiny_tokenizer", "mistral_tokenizer"])
def test_what_a_call_may_repeat_is_left_alone(tokenizer_name, request):
    tokenizer = request.getfixturevalue(tokenizer_name)
    numbers = "85, 91, 92, 91, 92, 91, 92, 91, 92"
    # The same loop as text, outside any call: free text is not this penalty's business.
    assert penalties(tokenizer, " The data: [" + numbers) == {}
    # A parallel turn's second call of one function repeats the first one's start and values.
    first = ' <functioncall> {"name": "f", "arguments": \'{"from": "Paris", "to": "Paris", "n": 2}\'}'
    assert penalties(tokenizer, first + '\n<functioncall> {"name": "f", "arguments": \'{"from": "Paris", '
                                                      '"to": "Paris", "n": 3}\'}') == {}
    # A number written twice in a row, a value twice in one call.
    assert penalties(tokenizer, CALL + '91, 91], "from": "Paris", "to": "Paris') == {}


@pytest.mark.parametrize("tokenizer_name", ["tiny_tokenizer", "mistral_tokenizer"])
def test_a_call_the_prompt_opened_is_watched_from_the_first_token(tokenizer_name, request):
    """``tool_choice`` required writes the call's start into the prompt: the reply is inside a call
    from its first token, with no marker of its own."""
    tokenizer = request.getfixturevalue(tokenizer_name)
    loop = '{"data": [85, 91, 92, 91, 92, 91, 92, 91, 92'
    assert penalties(tokenizer, " " + loop) == {}  # no marker, no call
    opened = penalties(tokenizer, loop, written=' <functioncall> {"name": "stats", "arguments": \'')
    assert max(opened.values()) > 10, opened


def test_generate_batch_gives_each_row_the_loop_penalty(tiny_model_dir, monkeypatch):
    """``loop_penalty`` reaches every row's guide, which sees the reply's tokens as they come (not the
    prompt's); without it rows have no guide."""
    model, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    seen = []

    def spy(self, logits):
        seen.append((len(self.reply), self.multiplier))

    monkeypatch.setattr(Loops, "lower", spy)
    prompt = generation_prompt(build_system_prompt(DEMO_SCHEMAS), [Turn("user", "hello")])
    generate_batch(model, tokenizer, [prompt, prompt + " "], max_new_tokens=3, loop_penalty=0.5)
    assert seen == [(0, 0.5), (0, 0.5), (1, 0.5), (1, 0.5), (2, 0.5), (2, 0.5)]
    assert generate_batch(model, tokenizer, [prompt], max_new_tokens=3) and len(seen) == 6  # off by default
