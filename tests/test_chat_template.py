"""The Jinja chat template saved with every tokenizer renders exactly what fcmistral.prompt renders."""

from __future__ import annotations

import json

import pytest

from fcmistral.chat_template import add_chat_template
from fcmistral.format.glaive import parse_row
from fcmistral.prompt import END_OF_TURN, Turn, generation_prompt, render_chat, render_turn
from tests.conftest import REPO, read_jsonl

ROWS = [parse_row(r) for name in ("sample_train.jsonl", "sample_heldout.jsonl") for r in read_jsonl(REPO / "data" / name)]


def to_messages(turns: list[Turn], arguments_as_text: bool = False) -> list[dict]:
    """OpenAI-style messages for glaive turns (a system message too: the template ignores it)."""
    messages: list[dict] = [{"role": "system", "content": "ignored: the system prompt comes from the tools"}]
    for turn in turns:
        if turn.role == "function_call":
            arguments = json.dumps(turn.call.arguments, ensure_ascii=False) if arguments_as_text else turn.call.arguments
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": turn.call.name, "arguments": arguments}}]})
        else:
            messages.append({"role": {"function_response": "tool"}.get(turn.role, turn.role), "content": turn.content})
    return messages


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    add_chat_template(tiny_tokenizer)
    return tiny_tokenizer


def test_every_sample_row_renders_byte_for_byte(tokenizer):
    assert len(ROWS) == 660
    for i, row in enumerate(ROWS):
        tools = row.functions if i % 2 else [{"type": "function", "function": f} for f in row.functions]
        text = tokenizer.apply_chat_template(to_messages(row.turns, arguments_as_text=i % 3 == 0), tools=tools,
                                             tokenize=False)
        assert text == row.system + render_chat(row.turns), f"row {i}"


def test_generation_prompt_ends_where_prompt_py_ends(tokenizer):
    checked = 0
    for row in ROWS[::5]:
        for i, turn in enumerate(row.turns):
            if turn.is_assistant:
                text = tokenizer.apply_chat_template(to_messages(row.turns[:i]), tools=row.functions, tokenize=False,
                                                     add_generation_prompt=True)
                assert text == generation_prompt(row.system, row.turns[:i])
                checked += 1
    assert checked > 100


def test_generation_markers_cover_the_assistant_turns(tokenizer):
    """What TRL's assistant_only_loss would train on: each assistant turn, tag to end marker. (Ours
    also supervises the separator and the next turn's tag, and the final EOS: fcmistral.data.labels.)"""
    row = next(r for r in ROWS if sum(t.is_assistant for t in r.turns) >= 2)
    out = tokenizer.apply_chat_template(to_messages(row.turns), tools=row.functions, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    runs, current = [], []
    for token, masked in zip(ids, mask):
        if masked:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    expected = [render_turn(t) for t in row.turns if t.is_assistant]
    assert [tokenizer.decode(r) for r in runs] == expected and expected[0].endswith(END_OF_TURN)
