"""Function schemas and calls: schemas are checked when loaded, arguments by a JSON-Schema
validator, and a call that hangs or returns what JSON cannot hold becomes an error for the model."""

from __future__ import annotations

import datetime
import json
import threading

import pytest

from fcmistral.errors import UserError
from fcmistral.format.schemas import load_schemas, validate_arguments
from fcmistral.prompt import format_call
from fcmistral.serving.chat import ChatSession
from tests.conftest import REPO
from tests.test_inference import Scripted

ECHO = {"name": "echo", "description": "Return the value", "parameters": {
    "type": "object", "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                     "days": {"type": "integer", "minimum": 1}}, "required": ["unit"]}}


def test_arguments_are_checked_by_json_schema():
    schema = load_schemas(REPO / "custom_function.txt")[0]
    assert validate_arguments(schema, {"apiKey": "k", "ip": "1.1.1.1", "section": "geo"}) == []
    problems = validate_arguments(schema, {"apiKey": 3, "host": "x"})
    assert "'ip' is a required property" in problems
    assert "argument 'apiKey': 3 is not of type 'string'" in problems
    assert any("'host' was unexpected" in p for p in problems)  # undeclared names are refused
    # The hand-written check did a substring match when an enum was a string: "cel" passed for "celsius".
    assert validate_arguments(ECHO, {"unit": "cel"}) == ["argument 'unit': 'cel' is not one of ['celsius', 'fahrenheit']"]
    assert validate_arguments(ECHO, {"unit": "celsius", "days": 0}) == ["argument 'days': 0 is less than the minimum of 1"]
    assert validate_arguments(ECHO, {"unit": "celsius", "days": True}) != []  # a bool is not an integer


@pytest.mark.parametrize("parameters, message", [
    ('{"type": "object"}', "'parameters' must be a JSON Schema object, got str"),
    ({"type": "object", "properties": {"unit": {"type": "string", "enum": "celsius"}}},
     "not a valid JSON Schema at properties/unit/enum: 'celsius' is not of type 'array'"),
    ({"type": "int"}, "not a valid JSON Schema at type"),
])
def test_schemas_are_checked_when_loaded_not_when_called(parameters, message, tmp_path):
    path = tmp_path / "functions.json"
    path.write_text(json.dumps([{"name": "broken", "parameters": parameters}]))
    with pytest.raises(UserError, match="function 'broken': ") as caught:
        load_schemas(path)
    assert message in str(caught.value)


def _response(tool, time_limit: float = 30.0) -> dict:
    """The FUNCTION RESPONSE the model gets after calling ``tool``, and proof the chat went on."""
    model = Scripted([format_call("echo", {"unit": "celsius"}), "Done."])
    turns = ChatSession(model, [ECHO], {"echo": tool}, tool_time_limit=time_limit).send("Go")
    assert [t.role for t in turns] == ["user", "function_call", "function_response", "assistant"]
    return json.loads(turns[2].content)


def test_a_hanging_tool_times_out_and_the_chat_goes_on():
    release = threading.Event()
    try:
        response = _response(lambda unit: release.wait(), time_limit=0.2)
    finally:
        release.set()
    assert response == {"error": "echo timed out: no result after 0.2 s"}


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this")


def _circular() -> dict:
    loop: dict = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize("result, error", [
    (_circular(), "ValueError: Circular reference detected"),
    (Unprintable(), "RuntimeError: no text for this"),
    (float("nan"), "ValueError: Out of range float values are not JSON compliant"),
    ({"t": float("inf")}, "ValueError: Out of range float values are not JSON compliant"),
])
def test_a_result_json_cannot_hold_becomes_an_error(result, error):
    response = _response(lambda unit: result)
    assert response["error"].startswith("the result of echo cannot be sent as JSON: ") and error in response["error"]


def test_results_json_can_hold_are_sent():
    assert _response(lambda unit: {"unit": unit, "n": [1, 2.5]}) == {"unit": "celsius", "n": [1, 2.5]}
    assert _response(lambda unit: datetime.date(2026, 11, 29)) == {"result": "2026-11-29"}  # via str()
    assert _response(lambda unit: None) == {"result": None}



def test_parallel_calls_each_run_and_answer_in_order():
    """A turn of two calls (prompt.py's parallel convention): both run, in order, one FUNCTION
    RESPONSE each; a bad call among them gets its error without stopping the other, and the model
    then reads both results in its next prompt."""
    parallel = "\n".join([format_call("echo", {"unit": "celsius"}), format_call("echo", {"unit": "kelvin"}),
                          format_call("echo", {"unit": "fahrenheit", "days": 2})])
    model = Scripted([parallel, "Done."])
    ran = []
    turns = ChatSession(model, [ECHO], {"echo": lambda **kw: ran.append(kw) or kw}).send("Go")
    assert [t.role for t in turns] == ["user", "function_call"] + ["function_response"] * 3 + ["assistant"]
    assert ran == [{"unit": "celsius"}, {"unit": "fahrenheit", "days": 2}]
    responses = [json.loads(t.content) for t in turns[2:5]]
    assert responses[0] == {"unit": "celsius"} and responses[2] == {"unit": "fahrenheit", "days": 2}
    assert "kelvin" in responses[1]["error"]
    assert model.prompts[-1].count("FUNCTION RESPONSE: ") == 3


def test_the_completer_peeks_under_its_constraints_peek_of(monkeypatch):
    """inference.py's ``--majority_decisions`` reaches the peek after a text turn (its ``peek_of``);
    without them the peek is unconstrained, as before."""
    from fcmistral.constraint import CallConstraint
    from fcmistral.serving import completer

    seen = []
    monkeypatch.setattr(completer, "generate_batch", lambda model, tokenizer, prompts, constraints, **_: (
        seen.append(constraints[0]) or ["x"]))
    for constraint in (CallConstraint(majority=True), CallConstraint(call_bias=-1.0), None):
        complete = completer.Completer(None, None, constraint=constraint)
        complete("prompt")
        complete("prompt", max_new_tokens=8, guided=False)
    assert seen == [CallConstraint(majority=True), CallConstraint(majority=True, peek=True),
                    CallConstraint(call_bias=-1.0), None, None, None]
