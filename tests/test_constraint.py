"""Row guides (fcmistral/constraint.py): the batch's masks equal xgrammar's own, the call bias moves
only the reply's first token, and generate_batch writes a call that passes the checker when a call
is required (the tiny random model, which unconstrained writes none)."""

from __future__ import annotations

import pytest
import torch

from fcmistral.constraint import CallConstraint, Guides, adjust_rows
from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.format.checks import check_calls
from fcmistral.format.grammar import call_grammar
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt

xgrammar = pytest.importorskip("xgrammar", reason="xgrammar is not installed")


@pytest.fixture(scope="module")
def guides(tiny_tokenizer) -> Guides:
    return Guides(tiny_tokenizer, len(tiny_tokenizer))


def test_masks_equal_xgrammars_own_and_rows_without_a_guide_are_untouched(guides):
    grammar = CallConstraint(call_grammar(DEMO_SCHEMAS, "required"))
    rows = [guides.guide(grammar), None, guides.guide(grammar), guides.guide(CallConstraint(call_bias=0.5))]
    rows[2].matcher.accept_string(' <functioncall> {"name": "get_current_weather", "arguments": \'{"location": "P')
    logits = torch.randn(4, len(guides.tokenizer), generator=torch.Generator().manual_seed(0))
    expected = logits.clone()
    for index in (0, 2):
        bitmask = xgrammar.allocate_token_bitmask(1, logits.shape[-1])
        rows[index].matcher.fill_next_token_bitmask(bitmask)
        xgrammar.apply_token_bitmask_inplace(expected[index:index + 1], bitmask)
    expected[3, guides.call_token] += 0.5
    adjust_rows(rows, logits)
    assert torch.equal(logits, expected)
    assert torch.isfinite(logits[0]).sum() < 5 < torch.isfinite(logits[2]).sum()  # " " only; then any string


def test_the_call_bias_moves_the_first_token_only(guides):
    guide = guides.guide(CallConstraint(call_bias=3.0))
    logits = torch.zeros(1, len(guides.tokenizer))
    adjust_rows([guide], logits)
    assert logits[0, guides.call_token] == 3.0 and logits.sum() == 3.0
    guide.take(5)
    later = torch.zeros(1, len(guides.tokenizer))
    adjust_rows([guide], later)
    assert later.sum() == 0
    assert guides.guide(CallConstraint(call_grammar(DEMO_SCHEMAS, "required"), 3.0, written=" <functioncall>")).decision is None


def test_generate_batch_writes_a_valid_call_when_one_is_required(tiny_model_dir):
    from fcmistral.generation import generate_batch, load_for_generation

    model, tokenizer = load_for_generation(str(tiny_model_dir), dtype=torch.float32)
    # Values of bounded length (a boolean, an enum): a random model need not choose to end a string or a number.
    schemas = [DEMO_SCHEMAS[0], {"name": "set_light", "description": "Switch a room's light", "parameters": {
        "type": "object", "properties": {"room": {"type": "string", "enum": ["kitchen", "hall"]},
                                         "on": {"type": "boolean"}}, "required": ["room", "on"]}}]
    prompts = [generation_prompt(build_system_prompt(schemas), [Turn("user", q)]) for q in ("lights?", "hello")]
    plain = generate_batch(model, tokenizer, prompts, max_new_tokens=80)
    assert not any("<functioncall>" in reply for reply in plain)
    grammar = call_grammar(schemas[1:], "required", parallel=False)  # (the random model would go on calling)
    replies = generate_batch(model, tokenizer, prompts, max_new_tokens=80,
                             constraints=[CallConstraint(grammar), None])
    calls, problem = check_calls(replies[0], {s["name"]: s for s in schemas})
    assert problem is None and len(calls) >= 1, replies[0]
    assert replies[1] == plain[1]  # the row without a constraint is generated as before


def _logits(guides: Guides, decision: int, value: float) -> torch.Tensor:
    """One row where ``decision`` has logit ``value`` and two other tokens 0.8, the rest nothing."""
    logits = torch.full((1, len(guides.tokenizer)), -1e9)
    logits[0, [1, 2]] = 0.8
    logits[0, decision] = value
    return logits


def test_majority_decisions_take_the_call_marker_only_where_it_holds_half(guides):
    """Greedy decoding calls where the marker is the likeliest single token (here 0.38 against 0.31 for
    each of two first words); with ``majority`` it calls only at 0.5 or more, after the call bias."""
    ahead = _logits(guides, guides.call_token, 1.0)  # p(marker) = e / (e + 2 e^0.8) = 0.38
    adjust_rows([guides.guide(CallConstraint(call_bias=1e-9))], ahead)
    assert ahead[0].argmax() == guides.call_token
    adjust_rows([guides.guide(CallConstraint(majority=True))], ahead)
    assert ahead[0, guides.call_token] == float("-inf") and ahead[0].argmax() in (1, 2)
    sure = _logits(guides, guides.call_token, 3.0)  # 0.82
    adjust_rows([guides.guide(CallConstraint(majority=True))], sure)
    assert sure[0].argmax() == guides.call_token
    biased = _logits(guides, guides.call_token, 3.0)  # 0.82, lowered by the bias to 0.38 first
    adjust_rows([guides.guide(CallConstraint(call_bias=-2.0, majority=True))], biased)
    assert biased[0, guides.call_token] == float("-inf")
    assert guides.guide(CallConstraint(majority=True, written=" <functioncall>")).decision is None  # decided


def test_a_peek_takes_the_assistant_tag_only_where_it_holds_half_at_any_step(guides):
    assert "ASSISTANT:".startswith(guides.tokenizer.decode([guides.tag_token]).strip())
    peek = CallConstraint(majority=True).peek_of()
    assert peek == CallConstraint(majority=True, peek=True) and CallConstraint(call_bias=-1.0).peek_of() is None
    guide = guides.guide(peek)
    guide.take(5)  # the separator's tokens come first: the tag may come at any step
    doubtful, likely = _logits(guides, guides.tag_token, 1.0), _logits(guides, guides.tag_token, 3.0)
    adjust_rows([guide], doubtful)
    adjust_rows([guide], likely)
    assert doubtful[0, guides.tag_token] == float("-inf") and likely[0].argmax() == guides.tag_token


def test_a_peeks_tag_holds_half_only_with_the_path_to_it(guides):
    """The other outcomes may part before the tag (a row's end spelt as one newline token, a next
    turn's separator as two): the tag's probability is the whole path's, 0.6 x 0.82 here."""
    guide = guides.guide(CallConstraint(majority=True).peek_of())
    first = _logits(guides, 7, 1.7)  # p(7) = e^1.7 / (e^1.7 + 2 e^0.8) = 0.60
    adjust_rows([guide], first)
    guide.take(7)
    then = _logits(guides, guides.tag_token, 3.0)  # 0.82 alone, 0.49 with the path
    adjust_rows([guide], then)
    assert then[0, guides.tag_token] == float("-inf")
