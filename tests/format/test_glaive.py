"""The glaive format: parsing rows and calls, and rendering them back byte for byte."""

from __future__ import annotations

import pytest

from fcmistral.demo.sample_data import generate_rows
from fcmistral.format.calls import CallParseError, parse_call, parse_calls
from fcmistral.format.glaive import RowParseError, parse_functions, parse_row
from fcmistral.prompt import (
    SYSTEM_NO_FUNCTIONS,
    Turn,
    build_system_prompt,
    format_call,
    format_calls,
    generation_prompt,
    render_chat,
)

WEATHER = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TAX = {"name": "calculate_tax", "description": "Tax", "parameters": {"type": "object", "properties": {"income": {"type": "number"}}}}


def test_real_row_round_trips_byte_for_byte(real_row):
    row = parse_row(real_row)
    assert row.text == real_row["system"] + real_row["chat"]
    assert build_system_prompt(row.functions) == real_row["system"]
    assert [t.role for t in row.turns] == ["user", "assistant", "user", "function_call", "function_response", "assistant"]
    (call,) = row.turns[3].calls
    assert call.arguments == {"text": "Je suis un étudiant"}
    assert format_call(call.name, call.arguments) == row.turns[3].content


def test_every_shipped_sample_row_round_trips(sample_rows):
    for raw in sample_rows:
        row = parse_row(raw)
        assert row.text == raw["system"] + raw["chat"]
        assert build_system_prompt(row.functions) == raw["system"]
        for turn in row.turns:
            if turn.role == "function_call":
                assert format_calls(turn.calls) == turn.content


def test_shipped_sample_files_are_what_the_generator_writes(sample_rows):
    from fcmistral.demo.sample_data import TRAIN_SEED

    assert generate_rows(len(sample_rows), TRAIN_SEED) == sample_rows


def test_several_schemas_are_concatenated_objects_not_a_list():
    system = build_system_prompt([WEATHER, TAX])
    assert system.count("}\n\n{") == 1 and system.endswith("}\n\n")
    assert parse_functions(system) == [WEATHER, TAX]
    assert build_system_prompt([WEATHER]).endswith("}\n")


def test_row_without_functions_and_two_newline_separator():
    chat = "USER: Hi there\n\nASSISTANT: Hello! <|endoftext|>\n\n"
    row = parse_row({"system": SYSTEM_NO_FUNCTIONS, "chat": chat})
    assert row.functions == [] and row.separator == "\n\n"
    assert [t.content for t in row.turns] == ["Hi there", "Hello!"]
    assert row.chat == chat


@pytest.mark.parametrize(
    "text, name, arguments",
    [
        ("""<functioncall> {"name": "say", "arguments": '{"text": "let's go, it's late"}'} <|endoftext|>""",
         "say", {"text": "let's go, it's late"}),
        ("""<functioncall> {"name": "say", "arguments": {"text": "bare object"}}""", "say", {"text": "bare object"}),
        ("""<functioncall> {"name": "say", "parameters": '{"n": 3}'}""", "say", {"n": 3}),
        ("""<functioncall> {"name": "say", "arguments": '{"text": "it\\'s"}'}""", "say", {"text": "it's"}),
        ("""<functioncall> {"name": "lim", "arguments": '{"max": Infinity, "x": null, "l": [1, 2]}'}""",
         "lim", {"max": float("inf"), "x": None, "l": [1, 2]}),
        ("""<functioncall> {"name": "say", "arguments": '{"text": "Zürich ☀"}'}}""", "say", {"text": "Zürich ☀"}),
        ("""Sure! <functioncall> {"name": "go", "arguments": '{}'}""", "go", {}),
        ("""<functioncall> {"name": "go", "arguments": '{\n  "a": 1,\n  "b": "x"\n}'}""", "go", {"a": 1, "b": "x"}),
        ("""<functioncall> {"name": "create_to-do_list", "arguments": '{"t": "a"}'}""", "create_to-do_list", {"t": "a"}),
    ],
)
def test_call_variants_of_the_real_data_parse(text, name, arguments):
    call = parse_call(text)
    assert (call.name, call.arguments) == (name, arguments)


@pytest.mark.parametrize(
    "text",
    [
        "no call here",
        """<functioncall> {"name": "go", "arguments": '{"a": 1""",  # truncated
        """<functioncall> {"arguments": '{"a": 1}'}""",  # no name
        """<functioncall> {"name": "go", "arguments": '[1, 2]'}""",  # not an object
    ],
)
def test_unreadable_calls_raise_a_parse_error(text):
    with pytest.raises(CallParseError):
        parse_call(text)


A_CALL = """<functioncall> {"name": "f", "arguments": '{"a": 1}'}"""
B_CALL = """<functioncall> {"name": "g", "arguments": '{"b": "it's"}'}"""


@pytest.mark.parametrize(
    "text, names",
    [
        (f"{A_CALL} {B_CALL}", ["f", "g"]),  # two calls in one turn
        (f"{A_CALL} <|endoftext|>\n\n\nASSISTANT: {B_CALL} <|endoftext|>", ["f", "g"]),  # consecutive turns
        (f"{A_CALL}\n\n\nASSISTANT: {B_CALL}", ["f", "g"]),  # consecutive turns, no end marker
        (f"{A_CALL}\n\n\nUSER: thanks", ["f"]),  # an invented user turn ends the reply
        (f"{A_CALL}\n\n\nFUNCTION RESPONSE: {{}}\n\n\nASSISTANT: {B_CALL}", ["f"]),  # so does an invented result
        (f"Let me check. {A_CALL}", ["f"]),
    ],
)
def test_every_call_of_a_reply_is_read(text, names):
    calls = parse_calls(text)
    assert [c.name for c in calls] == names
    assert calls[0].arguments == {"a": 1}
    if len(calls) > 1:
        assert calls[1].arguments == {"b": "it's"}


def test_a_turn_with_two_calls_is_not_one_call():
    with pytest.raises(CallParseError, match="2 calls where one was expected"):
        parse_call(f"{A_CALL} {B_CALL}")
    with pytest.raises(CallParseError, match="not valid JSON"):  # one broken call breaks the reply
        parse_calls(f"""{A_CALL} <functioncall> {{"name": "g", "arguments": '{{"b": '}}""")


def test_format_call_keeps_apostrophes_and_unicode_raw():
    text = format_call("say", {"text": "l'été à Zürich"})
    assert text == """<functioncall> {"name": "say", "arguments": '{"text": "l'été à Zürich"}'}"""
    assert parse_call(text).arguments == {"text": "l'été à Zürich"}


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"system": SYSTEM_NO_FUNCTIONS}, "no string"),
        ({"system": "nonsense", "chat": "USER: hi\n\n\n"}, "SYSTEM header"),
        ({"system": SYSTEM_NO_FUNCTIONS, "chat": "hello\n"}, "role tag"),
        ({"system": build_system_prompt([WEATHER])[:-20], "chat": "USER: hi\n\n\n"}, "not valid JSON"),
        ({"system": SYSTEM_NO_FUNCTIONS, "chat": "USER: hi\n\n\nASSISTANT: <functioncall> {\"name\": \n\n\n"}, "turn 1"),
    ],
)
def test_bad_rows_raise_with_a_reason(row, reason):
    with pytest.raises(RowParseError, match=reason):
        parse_row(row)


def test_generation_prompt_ends_on_the_assistant_tag_without_space():
    system = build_system_prompt([WEATHER])
    prompt = generation_prompt(system, [Turn("user", "Weather in Paris?")])
    assert prompt == system + "USER: Weather in Paris?\n\n\nASSISTANT:"
    assert prompt[:-len("ASSISTANT:")] == system + render_chat([Turn("user", "Weather in Paris?")])


def test_a_call_with_long_runs_of_spaces_parses_in_linear_time():
    """The quoted-arguments regex backtracked quadratically over runs of spaces (8,000 took 1.4 s;
    this payload, minutes). Run apart with a limit a thousand times what it takes now."""
    import subprocess
    import sys

    code = ("from fcmistral.format.calls import parse_payload, CallParseError\n"
            "p = '{\"name\": \"f\", \"arguments\": \\'' + (\"'}\" + ' ' * 300000) * 3 + 'x'\n"
            "try:\n    parse_payload(p)\nexcept CallParseError:\n    print('refused')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "refused", result.stderr
