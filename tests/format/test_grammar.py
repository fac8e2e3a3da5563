"""The call grammar rejects no call the format allows: every call of the sample rows, a call built
from each BFCL answer, and random schemas with random valid arguments are accepted token by token,
as the model would write them (the training text's tokens), under each tokenizer kind; and it
refuses what the checker refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcmistral.constraint import CallConstraint, Guides
from fcmistral.evaluation.bfcl_data import CATEGORY_FILES, load_bfcl_items
from fcmistral.format.checks import call_problem
from fcmistral.format.glaive import parse_row
from fcmistral.format.grammar import call_grammar
from fcmistral.modeling import load_tokenizer, text_encoder
from fcmistral.prompt import (
    END_OF_TURN,
    FUNCTION_CALL_MARKER,
    FunctionCall,
    format_call,
    format_calls,
    generation_prompt,
    render_turn,
)
from tests.conftest import REPO, read_jsonl
from tests.evaluation.test_bfcl import first_acceptable, shipped_data, unreachable

pytest.importorskip("xgrammar", reason="xgrammar is not installed")


def turn_tokens(tokenizer, prompt: str, reply: str) -> list[int]:
    """The tokens of ``reply`` after ``prompt`` as training reads the whole text."""
    encoder = text_encoder(tokenizer)
    prompt_ids, ids = encoder.encode(prompt).ids, encoder.encode(prompt + reply).ids
    assert ids[:len(prompt_ids)] == prompt_ids
    return ids[len(prompt_ids):]


def refused_at(guides: Guides, grammar: str, tokens: list[int]) -> int | None:
    """The index of the first token the grammar refuses, or None."""
    matcher = guides.guide(CallConstraint(grammar)).matcher
    for index, token in enumerate(tokens):
        if not matcher.accept_token(token):
            return index
    return None


def sample_calls():
    """(system, prompt, reply, functions) of every call turn of the 660 sample rows."""
    for name in ("sample_train.jsonl", "sample_heldout.jsonl"):
        for raw in read_jsonl(REPO / "data" / name):
            row = parse_row(raw)
            for i, turn in enumerate(row.turns):
                if turn.role == "function_call":
                    prompt = generation_prompt(row.system, row.turns[:i], row.separator)
                    yield prompt, " " + render_turn(turn).split(" ", 1)[1], row.functions


@pytest.fixture(scope="module", params=["tiny", "mistral", "smollm2"])
def guides(request):
    tokenizer = {"tiny": lambda: request.getfixturevalue("tiny_tokenizer"),
                 "mistral": lambda: request.getfixturevalue("mistral_tokenizer"),
                 "smollm2": lambda: load_tokenizer(str(request.getfixturevalue("smollm2_dir")))}[request.param]()
    return Guides(tokenizer, len(tokenizer))


def test_every_sample_call_is_accepted(guides):
    calls = list(sample_calls())
    assert len(calls) > 500
    refused = []
    for prompt, reply, functions in calls:
        tokens = turn_tokens(guides.tokenizer, prompt, reply)
        for mode in ("auto", "required"):
            if refused_at(guides, call_grammar(functions, mode), tokens) is not None:
                refused.append((mode, reply))
    assert refused == []


def test_every_bfcl_answer_is_accepted(guides):
    """A turn written from each BFCL answer's first acceptable values (arguments in the order the
    schema declares them; several calls: one per line, prompt.format_calls), for simple, multiple
    and parallel questions (every one under the tiny tokenizer, every 8th under the large
    vocabularies, where each grammar's compilation takes most of the time: suite time; the 660
    sample rows' calls are checked under all three). Answers whose values their own schema refuses (a string for an array,
    None for a number: BFCL data errors, a handful) are left out, as the checker refuses them too."""
    categories = [c for c in ("simple", "multiple", "parallel", "parallel_multiple") if c in CATEGORY_FILES]
    items = load_bfcl_items(categories, str(shipped_data()), None)
    assert len(items) > 900
    if len(guides.tokenizer) > 30_000:  # Mistral's (32k) and SmolLM2's (49k): every 8th (compiling is the cost)
        items = items[::8]
    refused, left_out = [], []
    for item in items:
        if unreachable(item.functions, item.possible_answer):
            continue
        shown = {f["name"]: s for f, s in zip(item.functions, item.schemas)}
        calls = []
        for expected in item.possible_answer:
            (name, arguments), = expected.items()
            values = first_acceptable(dict(arguments)) if arguments else {}
            schema = shown[name]
            ordered = {key: values[key] for key in schema["parameters"].get("properties", {}) if key in values}
            calls.append(FunctionCall(schema["name"], ordered))
        if any(call_problem(call, {s["name"]: s for s in item.schemas}) for call in calls):
            left_out.append(item.query_id)
            continue
        tokens = turn_tokens(guides.tokenizer, item.prompt, " " + format_calls(calls) + " " + END_OF_TURN)
        at = refused_at(guides, call_grammar(item.schemas, "auto"), tokens)
        if at is not None:
            refused.append((item.query_id, guides.tokenizer.decode(tokens[:at + 1])[-60:]))
    assert refused == []
    assert len(left_out) < len(items) / 100


# Random schemas and arguments valid for them: every JSON type, enums, nested objects, arrays,
# optional keys, and strings with quotes, apostrophes, backslashes, newlines and any unicode.
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["it's", 'say "hi"', "C:\\path\\", "a'}b", "line\nbreak", "é ü 漢字 🙂", "\\'", "'", ""])


@st.composite
def schema_and_value(draw, depth: int = 0):
    kinds = ["string", "integer", "number", "boolean", "enum"] + (["array", "object"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "string":
        return {"type": "string"}, draw(text)
    if kind == "integer":
        return {"type": "integer"}, draw(st.integers(-10**12, 10**12))
    if kind == "number":
        return {"type": "number"}, draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    if kind == "boolean":
        return {"type": "boolean"}, draw(st.booleans())
    if kind == "enum":
        # Known and left: xgrammar writes an enum value holding U+007F as "\u007f", json.dumps raw.
        options = draw(st.lists(text.filter(lambda t: "\x7f" not in t), min_size=1, max_size=4, unique=True))
        return {"type": "string", "enum": options}, draw(st.sampled_from(options))
    if kind == "array":
        item_schema, _ = draw(schema_and_value(depth + 1))
        values = draw(st.lists(schema_and_value(depth + 1).filter(lambda sv: sv[0] == item_schema), max_size=3))
        return {"type": "array", "items": item_schema}, [v for _, v in values]
    return draw(object_schema_and_value(depth + 1))


@st.composite
def object_schema_and_value(draw, depth: int = 0):
    keys = draw(st.lists(names, max_size=4, unique=True))
    properties, value, required = {}, {}, []
    for key in keys:
        schema, item = draw(schema_and_value(depth))
        properties[key] = schema
        if draw(st.booleans()):
            required.append(key)
            value[key] = item
        elif draw(st.booleans()):
            value[key] = item
    return {"type": "object", "properties": properties, "required": required}, value


@pytest.fixture(scope="module")
def tiny_guides(tiny_tokenizer) -> Guides:
    return Guides(tiny_tokenizer, len(tiny_tokenizer))


@settings(max_examples=60, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_schemas_and_valid_arguments_are_accepted(tiny_guides, data):
    count = data.draw(st.integers(1, 3))
    functions, calls = [], []
    for index in range(count):
        parameters, arguments = data.draw(object_schema_and_value())
        functions.append({"name": f"f{index}_{data.draw(names)}", "description": "d", "parameters": parameters})
        calls.append(FunctionCall(functions[-1]["name"], arguments))
    reply = " " + format_calls(data.draw(st.lists(st.sampled_from(calls), min_size=1, max_size=2))) + " " + END_OF_TURN
    tokens = turn_tokens(tiny_guides.tokenizer, "USER: hi\n\n\nASSISTANT:", reply)
    assert refused_at(tiny_guides, call_grammar(functions, "auto"), tokens) is None, reply


WEATHER = {"name": "get_weather", "parameters": {"type": "object", "required": ["city", "days"], "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}}}}


@pytest.mark.parametrize("reply", [
    format_call("get_wether", {"city": "Oslo", "days": 2}),  # unknown name
    format_call("get_weather", {"city": "Oslo"}),  # a required key missing
    format_call("get_weather", {"city": "Oslo", "days": "2"}),  # a string where an integer is due
    format_call("get_weather", {"city": "Oslo", "days": 2, "unit": "k"}),  # not in the enum
    format_call("get_weather", {"city": "Oslo", "days": 2, "wind": True}),  # an argument it does not declare
    format_call("get_weather", {"city": "Oslo", "days": float("nan")}),  # NaN
    format_call("get_weather", {"city": "Oslo", "days": 2}).replace('": ', ':   '),  # endless whitespace
    format_call("get_weather", {"city": "Oslo", "days": 2}) + " and more",  # text after the call
])
def test_calls_the_checker_refuses_are_refused(tiny_guides, reply):
    tokens = turn_tokens(tiny_guides.tokenizer, "USER: hi\n\n\nASSISTANT:", " " + reply + " " + END_OF_TURN)
    assert refused_at(tiny_guides, call_grammar([WEATHER], "auto"), tokens) is not None


def test_text_is_free_in_auto_mode_and_refused_when_a_call_is_required(tiny_guides):
    tokens = turn_tokens(tiny_guides.tokenizer, "USER: hi\n\n\nASSISTANT:", " It's <sunny> {today}. " + END_OF_TURN)
    guides = tiny_guides
    assert refused_at(guides, call_grammar([WEATHER], "auto"), tokens) is None
    assert refused_at(guides, call_grammar([WEATHER], "required"), tokens) == 0


def test_one_call_only_without_parallel_calls(tiny_guides):
    call = format_call("get_weather", {"city": "Oslo", "days": 2})
    tokens = turn_tokens(tiny_guides.tokenizer, "USER: hi\n\n\nASSISTANT:", f" {call}\n{call} {END_OF_TURN}")
    guides = tiny_guides
    assert refused_at(guides, call_grammar([WEATHER], "auto", parallel=True), tokens) is None
    assert refused_at(guides, call_grammar([WEATHER], "auto", parallel=False), tokens) is not None


def test_grammar_is_json_text_fit_for_vllm():
    """The structural tag vLLM's structured outputs take (its ``structural_tag`` field): JSON text."""
    tag = json.loads(call_grammar([WEATHER], "required"))
    assert tag["type"] == "structural_tag" and tag["format"]["type"] == "sequence"


def test_enum_values_with_latin1_letters_before_hex_digits_are_accepted(tiny_guides):
    """xgrammar prints "é" as \\xe9 and reads "\\xe9b" back as one character: "Québec" was refused.
    (Found by the random-schema test above on a CI run: an enum value "\\x80" + "0".)"""
    for value in ("Québec", "\x800", "Zürich", "a\\xe9b"):
        function = {"name": "f", "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "enum": [value, "Oslo"]}}, "required": ["city"]}}
        reply = " " + format_calls([FunctionCall("f", {"city": value})]) + " " + END_OF_TURN
        tokens = turn_tokens(tiny_guides.tokenizer, "USER: hi\n\n\nASSISTANT:", reply)
        assert refused_at(tiny_guides, call_grammar([function], "auto"), tokens) is None, value


def test_no_string_holds_the_end_marker(guides):
    """Generation stops at the end marker's text: written inside a value (SmolLM2 under the constraint,
    BFCL simple_python_96), it cut the call into an unreadable one. Strings are refused from its "<|"
    on (the opening of chat tokenizers' special tokens too); other text, "<" and "|" included, stays."""
    notes = {**WEATHER, "parameters": {**WEATHER["parameters"], "properties": {
        **WEATHER["parameters"]["properties"], "notes": {"type": "object"}}}}  # keys of its own choosing

    def tokens(value: str, key: str = "extra") -> list[int]:
        arguments = {"city": value, "days": 2, "notes": {key: value}}
        reply = " " + format_calls([FunctionCall("get_weather", arguments)]) + " " + END_OF_TURN
        return turn_tokens(guides.tokenizer, "USER: hi\n\n\nASSISTANT:", reply)

    grammar = call_grammar([notes], "auto")
    for value in ("a < | b", "|endoftext|>", "<<", "x|<", "<endoftext>", "a'}b"):
        assert refused_at(guides, grammar, tokens(value)) is None, value
        assert refused_at(guides, grammar, tokens("Oslo", key=value)) is None, value
    for value in (END_OF_TURN, "Oslo" + END_OF_TURN, "<" + END_OF_TURN + "x", "a <| b", "<|im_end|>"):
        for written in (tokens(value), tokens("Oslo", key=value)):  # in a value, in a key
            at = refused_at(guides, grammar, written)
            assert at is not None and at < len(written) - 4, value  # refused inside, not at the end


@pytest.mark.parametrize("reply", [" <function call> {}", " <function get_weather: {}", " <b>Oslo</b> is sunny.",
                                   "<b>Oslo</b> is sunny."])
def test_a_turn_opening_with_the_markers_first_character_is_a_call(guides, reply):
    """SmolLM2 under a negative call bias took the marker's first token, " <", then wrote "<function call>":
    unreadable, counted as no call. In ``auto`` mode a turn that opens with "<" must go on as the marker;
    text opening otherwise stays free, a marker after it included."""
    tokens = turn_tokens(guides.tokenizer, "USER: hi\n\n\nASSISTANT:", reply + END_OF_TURN)
    at = refused_at(guides, call_grammar([WEATHER], "auto"), tokens)
    assert at is not None and guides.tokenizer.decode(tokens[:at]).strip() in FUNCTION_CALL_MARKER
    call = format_call("get_weather", {"city": "Oslo", "days": 2})
    for text in (" Sure. " + call, "\nSure.", " It's <sunny>.", "  <b>Oslo</b>"):
        assert refused_at(guides, call_grammar([WEATHER], "auto"), turn_tokens(
            guides.tokenizer, "USER: hi\n\n\nASSISTANT:", text + " " + END_OF_TURN)) is None, text
