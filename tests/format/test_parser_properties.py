"""The parsers never crash: on any text, and on real rows cut and spliced at random, each returns a
value or raises its own error type (RowParseError, CallParseError, PythonCallError), never a
JSONDecodeError, RecursionError or IndexError from inside.

Derandomized and without an example database: the same examples on every run, nothing written
outside temporary folders.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcmistral.format.calls import CallParseError, parse_call, parse_calls
from fcmistral.format.glaive import GlaiveRow, RowParseError, parse_row
from fcmistral.format.pycall import PythonCallError, parse_python_call
from fcmistral.prompt import FunctionCall
from tests.conftest import REPO, read_jsonl

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
ROWS = read_jsonl(REPO / "data" / "sample_train.jsonl")[:40]

# Pieces the formats are made of, so that random text often comes close to something parseable.
FRAGMENTS = ["<functioncall>", "<|endoftext|>", "USER: ", "ASSISTANT: ", "FUNCTION RESPONSE: ", "SYSTEM: ",
             "\n\n\n", "\n", '{"name": "f", "arguments": \'', "'}", '"', "'", "\\", "\\'", "{", "}", "[", "]", ":",
             ",", "Infinity", "NaN", "-", "1e999", "\\u12", "\\ud800", "(", ")", "=", "**", "f(x=1)", "a.b",
             "lambda", "\x00", "é", "\u2028", "{" * 200, "[" * 2000, "(" * 200]
format_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=30).map("".join)
any_text = st.one_of(st.text(max_size=200), format_text)


@st.composite
def mutated_rows(draw) -> dict:
    """A real row with a few slices of its system or chat text deleted, duplicated or replaced."""
    row = dict(draw(st.sampled_from(ROWS)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["system", "chat"]))
        text = row[key]
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        replacement = draw(st.one_of(st.just(""), st.just(text[start:end] * 2), format_text))
        row[key] = text[:start] + replacement + text[end:]
    return row


def value_or_own_error(parse, given, value_type: type, error_type: type[Exception]) -> None:
    """``parse(given)`` returns a ``value_type`` or raises ``error_type``; anything else fails the test."""
    try:
        assert isinstance(parse(given), value_type)
    except error_type:
        pass


@PROPERTY
@given(mutated_rows())
def test_row_parser_on_mutated_real_rows(row):
    value_or_own_error(parse_row, row, GlaiveRow, RowParseError)


@PROPERTY
@given(st.fixed_dictionaries({"system": any_text, "chat": any_text}) | st.dictionaries(st.text(max_size=8), any_text))
def test_row_parser_on_any_text(row):
    value_or_own_error(parse_row, row, GlaiveRow, RowParseError)


@PROPERTY
@given(st.one_of(any_text, any_text.map(lambda t: "<functioncall> " + t)))
def test_call_parser_on_any_text(text):
    value_or_own_error(parse_call, text, FunctionCall, CallParseError)


@PROPERTY
@given(st.lists(st.one_of(any_text, any_text.map(lambda t: "<functioncall> " + t)), max_size=3).map("".join))
def test_calls_parser_on_any_text(text):
    value_or_own_error(parse_calls, text, list, CallParseError)


@PROPERTY
@given(st.text(max_size=12), st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=10),
                                          lambda inner: st.lists(inner, max_size=3)
                                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10))
def test_call_parser_reads_back_what_the_glaive_format_writes(name, value):
    """Every call written the glaive way parses back to the same name and arguments (NaN aside)."""
    arguments = {"v": value}
    text = "<functioncall> " + json.dumps({"name": name, "arguments": json.dumps(arguments)})[:-1]
    try:
        call = parse_call(text + "}")
    except CallParseError:
        return  # the arguments may hold NaN, which json reads back but never equals itself
    assert call.name == name
    assert json.dumps(call.arguments, sort_keys=True) == json.dumps(arguments, sort_keys=True)


@PROPERTY
@given(st.one_of(any_text, any_text.map(lambda t: f"f({t})"), any_text.map(lambda t: f"api.call(x={t})")))
def test_python_call_parser_on_any_text(source):
    value_or_own_error(parse_python_call, source, FunctionCall, PythonCallError)
