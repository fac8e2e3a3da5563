"""The Jinja chat template saved with every tokenizer renders exactly what fcmistral.prompt renders."""

from __future__ import annotations

import pytest

from fcmistral.chat_template import add_chat_template
from fcmistral.format.glaive import openai_messages, parse_row
from fcmistral.prompt import (
    END_OF_TURN,
    FunctionCall,
    Turn,
    build_system_prompt,
    call_turn,
    generation_prompt,
    render_chat,
    render_turn,
)
from tests.conftest import REPO, read_jsonl

ROWS = [parse_row(r) for name in ("sample_train.jsonl", "sample_heldout.jsonl") for r in read_jsonl(REPO / "data" / name)]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    add_chat_template(tiny_tokenizer)
    return tiny_tokenizer


def test_every_sample_row_renders_byte_for_byte(tokenizer):
    assert len(ROWS) == 660
    for i, row in enumerate(ROWS):
        tools = row.functions if i % 2 else [{"type": "function", "function": f} for f in row.functions]
        text = tokenizer.apply_chat_template(openai_messages(row.turns, arguments_as_text=i % 3 == 0), tools=tools,
                                             tokenize=False)
        assert text == row.system + render_chat(row.turns), f"row {i}"


def test_generation_prompt_ends_where_prompt_py_ends(tokenizer):
    checked = 0
    for row in ROWS[::5]:
        for i, turn in enumerate(row.turns):
            if turn.is_assistant:
                text = tokenizer.apply_chat_template(openai_messages(row.turns[:i]), tools=row.functions, tokenize=False,
                                                     add_generation_prompt=True)
                assert text == generation_prompt(row.system, row.turns[:i])
                checked += 1
    assert checked > 100


def test_generation_markers_cover_the_assistant_turns(tokenizer):
    """What TRL's assistant_only_loss would train on: each assistant turn, tag to end marker. (Ours
    also supervises the separator and the next turn's tag, and the final EOS: fcmistral.data.labels.)"""
    row = next(r for r in ROWS if sum(t.is_assistant for t in r.turns) >= 2)
    out = tokenizer.apply_chat_template(openai_messages(row.turns), tools=row.functions, tokenize=True, return_dict=True,
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


def expected_message(turn: Turn) -> dict:
    if turn.role == "function_call":
        return {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": call.name, "arguments": call.arguments}} for call in turn.calls]}
    return {"role": "assistant", "content": turn.content}


def test_every_assistant_turn_parses_back_to_its_message(tokenizer):
    """transformers' response parser, driven by the saved response_template, reads each assistant turn of
    the sample rows (as the model writes it: a space, the turn, the end marker) back into its message."""
    checked = 0
    for row in ROWS:
        for i, turn in enumerate(row.turns):
            if turn.is_assistant:
                reply = " " + turn.content + " " + END_OF_TURN
                parsed = tokenizer.parse_response(reply, prefix=generation_prompt(row.system, row.turns[:i]))
                assert parsed == expected_message(turn), (reply, parsed)
                checked += 1
    assert checked > 1000


def test_streamed_replies_parse_to_the_same_message(tokenizer):
    """The streaming parser, fed a character at a time, closes each call as soon as it is complete and
    ends with the same message as the whole-reply parser (text before a call included)."""
    row = next(r for r in ROWS if any(t.role == "function_call" for t in r.turns))
    i, turn = next((i, t) for i, t in enumerate(row.turns) if t.role == "function_call")
    reply = " Let me check. " + turn.content + " " + END_OF_TURN
    prefix = generation_prompt(row.system, row.turns[:i])
    stream = tokenizer.get_response_parser(prefix=prefix)
    calls_closed = []
    for position, character in enumerate(reply):
        for event in stream.feed(character):
            if event["type"] == "region_close" and event["field"] == "tool_calls":
                calls_closed.append((position, event["value"]))
    message, _ = stream.finalize()
    assert message == tokenizer.parse_response(reply, prefix=prefix)
    assert message == {"role": "assistant", "content": "Let me check.", "tool_calls": expected_message(turn)["tool_calls"]}
    assert [call for _, call in calls_closed] == message["tool_calls"]
    assert calls_closed[0][0] < reply.index(END_OF_TURN)  # closed at the call's end, not at the end of the reply


WEATHER = {"name": "get_weather", "description": "Weather now", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PARALLEL = [Turn("user", "Weather in Paris and in Zoë's town?"),
            call_turn([FunctionCall("get_weather", {"city": "Paris"}), FunctionCall("get_weather", {"city": "Zoë's"})]),
            Turn("function_response", '{"temp": 12}'), Turn("function_response", '{"temp": 9}'),
            Turn("assistant", "12 degrees in Paris, 9 in Zoë's town.")]


def test_parallel_calls_are_one_turn_in_template_parser_and_mask(tokenizer):
    """Several tool_calls in one message: one assistant turn, calls on their own lines (prompt.py's
    convention), rendered byte for byte, read back as both calls, and supervised as one turn."""
    system = build_system_prompt([WEATHER])
    assert PARALLEL[1].content.count("\n") == 1
    text = tokenizer.apply_chat_template(openai_messages(PARALLEL), tools=[WEATHER], tokenize=False)
    assert text == system + render_chat(PARALLEL)
    reply = " " + PARALLEL[1].content + " " + END_OF_TURN
    assert tokenizer.parse_response(reply, prefix=generation_prompt(system, PARALLEL[:1])) == expected_message(PARALLEL[1])
    out = tokenizer.apply_chat_template(openai_messages(PARALLEL[:2]), tools=[WEATHER], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    supervised = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(supervised) == render_turn(PARALLEL[1])


def test_response_template_is_saved_with_the_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.response_template == tokenizer.response_template
    reply = ' <functioncall> {"name": "say", "arguments": \'{"text": "let\'s go"}\'} <|endoftext|>'
    assert again.parse_response(reply, prefix="USER: hi\n\n\nASSISTANT:")["tool_calls"][0]["function"] == {
        "name": "say", "arguments": {"text": "let's go"}}
