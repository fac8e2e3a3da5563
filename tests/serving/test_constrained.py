"""Constrained calls in the server (the scripted model behind the real engine, character tokens):
a model that prefers a wrong call writes a valid one under the call grammar, at once; without it the
call fails the check and needs the retry. Constrained and unconstrained rows share a batch, a
streamed constrained reply equals the plain one, and a tool set's grammar is compiled once."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from fcmistral.format.calls import parse_call
from fcmistral.format.checks import call_problem
from fcmistral.prompt import FunctionCall, format_call
from fcmistral.serving.limits import Limits
from tests.serving.scripted import LOOP, TOOLS, held_together
from tests.serving.test_server import ask, plain, reassemble, same

pytest.importorskip("xgrammar", reason="xgrammar is not installed")
SCHEMAS = {tool["function"]["name"]: tool["function"] for tool in TOOLS}

WRONG_CALLS = [
    # (each as long as the valid call the grammar makes of it: the scripted model writes its script by
    # position, and a longer forced text would shift the rest of the script into a string value)
    format_call("get_current_westher", {"location": "Paris"}),  # a function that is not offered
    format_call("get_current_weather", {"unit": "celsius"}),  # the required location missing
    format_call("calculate_tax", {"income": "50000", "tax_rate": 20}),  # a string where a number is due
    format_call("calculate_tax", {"income": float("nan"), "tax_rate": 20}),  # NaN
    format_call("get_current_weather", {"location": "Paris", "unit": "kelvins"}),  # not in the enum
]


def first_call(reply) -> FunctionCall:
    (call,) = reply.choices[0].message.tool_calls
    return FunctionCall(call.function.name, json.loads(call.function.arguments))


@pytest.mark.parametrize("wrong", WRONG_CALLS)
def test_a_wrong_call_is_written_valid_under_the_grammar(serve, wrong):
    assert call_problem(parse_call(wrong), SCHEMAS) is not None
    client, model, _ = serve(limits=Limits(constrained_calls="always"))
    call = first_call(ask(client, "call " + wrong, tools=TOOLS))
    assert call_problem(call, SCHEMAS) is None
    assert len(model.prompts) == 1  # valid as written: no retry

    client, model, _ = serve(limits=Limits(constrained_calls="never"))
    call = first_call(ask(client, "call " + wrong, tools=TOOLS))
    assert len(model.prompts) == 2 and '"error"' in model.prompts[1]  # refused, then the retry's call
    assert call == FunctionCall("get_current_weather", {"location": "Rome", "unit": "celsius"})


def test_tool_choice_required_and_named_are_constrained(serve):
    client, model, _ = serve()  # --constrained_calls never: tool_choice still constrains
    call = first_call(ask(client, "Weather?", tools=TOOLS, tool_choice="required"))
    assert call_problem(call, SCHEMAS) is None and len(model.prompts) == 1


def test_the_loop_penalty_ends_a_loop_inside_a_call(serve):
    """--loop_penalty: the model would write a place name looping on "o" (its script wins by 4);
    the penalty, growing with the loop, outweighs that after a few more, and the call stays valid.
    (tool_choice wrote the call's start into the prompt: the reply is inside a call from its start.)"""
    looping = "O" + "o" * LOOP
    client, _, _ = serve()
    assert first_call(ask(client, "loop", tools=TOOLS, tool_choice="required")).arguments["location"] == looping
    client, model, _ = serve(limits=Limits(loop_penalty=0.8))
    call = first_call(ask(client, "loop", tools=TOOLS, tool_choice="required"))
    assert call_problem(call, SCHEMAS) is None and len(model.prompts) == 1
    location = call.arguments["location"]
    assert location.startswith("O" + "o" * 8) and not location.startswith(looping), location


def test_strict_tools_constrained_beside_plain_ones_in_one_batch(serve):
    """With --constrained_calls strict, a request whose tool is marked strict is constrained and one
    without is not, generated in the same batch."""
    client, model, _ = serve(limits=Limits(constrained_calls="strict"))
    held_together(model, 2)
    wrong = WRONG_CALLS[2]
    strict_tools = [{**TOOLS[1], "function": {**TOOLS[1]["function"], "strict": True}}]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        strict = pool.submit(ask, client, "call " + wrong, tools=strict_tools)
        loose = pool.submit(ask, client, "call " + wrong + " ", tools=[TOOLS[1]])
        strict_call, loose_reply = first_call(strict.result()), loose.result()
    assert call_problem(strict_call, SCHEMAS) is None
    assert not loose_reply.choices[0].message.tool_calls  # its call and its retry's fail calculate_tax's schema
    first_prompts = [p for p in model.prompts if '"error"' not in p]
    assert any(sum(p in batch for p in first_prompts) == 2 for batch in model.batches), "not batched together"
    assert all('"strict"' not in p for p in model.prompts)  # the flag is not shown to the model


def test_streamed_constrained_reply_equals_the_plain_one(serve):
    client, _, _ = serve(limits=Limits(constrained_calls="always"))
    for wrong in WRONG_CALLS[:3]:
        full = plain(ask(client, "call " + wrong, tools=TOOLS))
        streamed = reassemble(ask(client, "call " + wrong, stream=True, tools=TOOLS,
                                  stream_options={"include_usage": True}))
        same(full, streamed)
        assert full["finish"] == "tool_calls"


def test_a_tool_set_is_compiled_once(serve):
    client, model, _ = serve(limits=Limits(constrained_calls="always"))
    ask(client, "call " + WRONG_CALLS[0], tools=TOOLS)
    compiler = model._fcmistral_guides._compiler
    size = compiler.get_cache_size_bytes()
    assert size > 0
    ask(client, "call " + WRONG_CALLS[1], tools=TOOLS)
    assert compiler.get_cache_size_bytes() == size  # the same tools: the cached grammar
    ask(client, "call " + WRONG_CALLS[1], tools=TOOLS[:2])
    assert compiler.get_cache_size_bytes() > size


def test_majority_decisions_reach_the_reply_and_the_peek_after_it():
    """``--majority_decisions``: the reply's constraint has them, and so has the peek after a text turn
    (the second turn's tag decides a call as much as the marker); without them a peek is unconstrained."""
    from types import SimpleNamespace

    from fcmistral.constraint import CallConstraint
    from fcmistral.serving.chat_completions import ChatCompletions
    from fcmistral.serving.protocol import ChatRequest, request_functions
    from fcmistral.turns import Ask

    request = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS})
    engine = SimpleNamespace(encode=lambda prompt: [0] * len(prompt))
    peek = Ask("...", 8, peek=True)
    for limits, expected in ((Limits(majority_decisions=True), CallConstraint(majority=True, peek=True)), (Limits(), None)):
        handler = ChatCompletions(request, engine, limits, "m", request_functions(request))
        assert bool(handler.generation.constraint and handler.generation.constraint.majority) == limits.majority_decisions
        assert handler._request(peek).constraint == expected
