"""Evaluation's replies follow the turn policy (fcmistral.turns.replies): scripted generations, no model."""

from __future__ import annotations

from fcmistral.constraint import CallConstraint
from fcmistral.evaluation.items import EvalItem
from fcmistral.evaluation.scoring import judge
from fcmistral.prompt import ASSISTANT_TAG, END_OF_TURN, FunctionCall, Turn, build_system_prompt, format_call
from fcmistral.turns import PEEK_TOKENS, replies


def test_a_reply_that_acknowledges_then_calls_is_scored_on_its_call():
    """glaive's "Sure, let me check." then the call, in a second assistant turn: evaluation follows
    the chat's turn policy (a peek past the first turn, then the turn the model writes), so the call
    is scored as the chat and the server would run it; the peek is not constrained, the turns are.
    One generation call per token limit, the items of a batch together."""
    weather = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    call = FunctionCall("get_weather", {"city": "Paris"})
    items = [EvalItem(str(n), q, build_system_prompt([weather]), [Turn("user", q)], call)
             for n, q in enumerate(["Weather in Paris?", "Paris weather, please."])]
    asked = []

    def generate(prompts, constraints, max_new_tokens=None):
        asked.append((max_new_tokens, constraints))
        replies = []
        for prompt in prompts:
            if prompt.endswith(END_OF_TURN):  # the peek past a finished turn
                replies.append("\n\n\n" + ASSISTANT_TAG)
            elif "let me check" in prompt or "Paris weather" in prompt:
                replies.append(" " + format_call(call.name, call.arguments))
            else:
                replies.append(" Sure, let me check that for you.")
        return replies

    c0, c1 = CallConstraint("grammar 0", -1.0), CallConstraint("grammar 1")  # (stand-in grammars: never compiled here)
    outputs = replies(generate, items, [c0, c1])
    assert outputs[0] == "Sure, let me check that for you.\n\n" + format_call(call.name, call.arguments)
    assert outputs[1] == format_call(call.name, call.arguments)
    assert [judge(o, call)["exact_match"] for o in outputs] == [True, True]
    assert asked == [(None, [c0, c1]), (PEEK_TOKENS, [None]), (None, [c0])]
