"""The turn policy (fcmistral/turns.py), driven with scripted replies: no model, no I/O."""

from __future__ import annotations

import json

from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.prompt import FUNCTION_RESPONSE_TAG, Turn, build_system_prompt, format_call
from fcmistral.turns import CHAT_POLICY, SERVER_POLICY, Ask, TurnPolicy, assistant_turns, run_turns

SYSTEM = build_system_prompt(DEMO_SCHEMAS)
SCHEMAS = {f["name"]: f for f in DEMO_SCHEMAS}
TURNS = [Turn("user", "Weather in Rome?")]
GOOD = format_call("get_current_weather", {"location": "Rome", "unit": "celsius"})
BAD = format_call("rm_rf", {"path": "/"})


def drive(replies: list[tuple[str, str]], **options):
    """Run the policy on scripted (text, finish) replies; return the outcome and the asks."""
    asks: list[Ask] = []

    def answer(ask: Ask) -> tuple[str, str]:
        asks.append(ask)
        return replies[len(asks) - 1]

    return run_turns(assistant_turns(SYSTEM, TURNS, **options), answer), asks


def test_text_then_a_call_when_the_model_writes_the_assistant_tag_next():
    outcome, asks = drive([(" Sure, let me check.", "stop"), ("\n\n\nASSISTANT", "stop"), (" " + GOOD, "stop")])
    assert [t.role for t in outcome.turns] == ["assistant", "function_call"]
    assert outcome.finish_reason == "tool_calls"
    assert [a.peek for a in asks] == [False, True, False]


def test_the_conversation_goes_back_to_the_user_after_a_text_turn_not_followed_by_the_tag():
    outcome, asks = drive([(" It is sunny.", "stop"), ("\n\n\nUSER", "stop")])
    assert [t.role for t in outcome.turns] == ["assistant"] and outcome.finish_reason == "stop"
    assert len(asks) == 2


def test_at_most_max_assistant_turns_in_a_row():
    replies = [(" More.", "stop"), ("\n\n\nASSISTANT", "stop")] * 5
    outcome, asks = drive(replies, policy=TurnPolicy(max_assistant_turns=3))
    assert len(outcome.turns) == 3 and len(asks) == 5  # no peek after the last turn allowed
    outcome, _ = drive(replies, policy=SERVER_POLICY)
    assert len(outcome.turns) == 2


def test_an_unusable_call_is_shown_its_error_and_asked_again_where_calls_are_checked():
    outcome, asks = drive([(" " + BAD, "stop"), (" " + GOOD, "stop")], policy=SERVER_POLICY, schemas=SCHEMAS)
    assert outcome.finish_reason == "tool_calls" and [c.name for c in outcome.calls] == ["get_current_weather"]
    retry = asks[1].prompt
    assert f"{FUNCTION_RESPONSE_TAG} " in retry and "rm_rf" in json.loads(retry.rsplit(f"{FUNCTION_RESPONSE_TAG} ", 1)[1]
                                                                         .split("\n")[0])["error"]


def test_a_call_unusable_after_its_retries_is_text_and_the_chat_leaves_checking_to_the_runner():
    replies = [(" " + BAD, "stop"), (" " + BAD, "stop"), ("\n\n\nUSER", "stop")]  # then a peek, as after any text
    outcome, _ = drive(replies, policy=SERVER_POLICY, schemas=SCHEMAS)
    assert outcome.finish_reason == "stop" and not outcome.calls and outcome.turns[0].role == "assistant"
    outcome, asks = drive([(" " + BAD, "stop")], policy=CHAT_POLICY)  # no schemas: checked where it runs
    assert outcome.turns[0].role == "function_call" and outcome.turns[0].calls[0].name == "rm_rf" and len(asks) == 1


def test_a_call_cut_by_the_length_limit_is_text_and_a_forced_call_is_one_turn():
    outcome, _ = drive([(" " + GOOD[:20], "length")], policy=SERVER_POLICY, schemas=SCHEMAS)
    assert (outcome.turns[0].role, outcome.finish_reason) == ("assistant", "length")
    prefix = GOOD[: GOOD.index("'{") + 1]
    outcome, asks = drive([(GOOD[len(prefix):], "stop")], policy=SERVER_POLICY, schemas=SCHEMAS, prefix=prefix)
    assert outcome.finish_reason == "tool_calls" and asks[0].prompt.endswith(" " + prefix) and len(asks) == 1


def test_replies_give_each_peek_its_conversations_peek_constraint():
    """Majority decisions go on to the peek after a text turn (the tag of a second turn decides a call
    as much as the marker): a conversation with them peeks under ``peek_of``, one without unconstrained."""
    from fcmistral.constraint import CallConstraint
    from fcmistral.turns import replies

    class Conversation:
        system, turns = SYSTEM, TURNS
        prompt = SYSTEM

    seen: list[tuple[int | None, CallConstraint | None]] = []

    def generate(prompts, constraints, limit):
        seen.extend((limit, c) for c in constraints)
        return ["\n\n\nUSER" if limit else "I can't do that." for _ in prompts]

    majority, plain = CallConstraint(majority=True), CallConstraint(call_bias=-1.0)
    assert replies(generate, [Conversation(), Conversation()], [majority, plain]) == ["I can't do that."] * 2
    peeks = [c for limit, c in seen if limit]
    assert peeks == [CallConstraint(majority=True, peek=True), None]
    assert [c for limit, c in seen if not limit] == [majority, plain]
