"""Augmented rows (fcmistral/data/augment.py) are valid glaive rows, reproducible, and trained on as
ordinary rows."""

from __future__ import annotations

import json
import random

from fcmistral.data import augment
from fcmistral.data.augment import (
    Augmentation,
    augment_row,
    renamed,
    with_listed_values,
    with_parallel_calls,
    without_called_function,
)
from fcmistral.data.loading import prepare_splits
from fcmistral.format.checks import call_problem
from fcmistral.format.glaive import GlaiveRow, parse_row
from fcmistral.prompt import CALL_SEPARATOR, FUNCTION_CALL_MARKER, SYSTEM_NO_FUNCTIONS, build_system_prompt
from tests.conftest import REPO


def rows_with_calls(sample_rows: list[dict]) -> list[dict]:
    return [r for r in sample_rows if FUNCTION_CALL_MARKER in r["chat"]]


def test_irrelevance_removes_the_called_function_and_declines(sample_rows):
    rng = random.Random(0)
    for raw in rows_with_calls(sample_rows):
        row = parse_row(raw)
        called = next(t.calls[0].name for t in row.turns if t.role == "function_call")
        declined = without_called_function(row, rng)
        again = parse_row({"system": declined.system, "chat": declined.chat})  # a valid glaive row
        assert called not in {f["name"] for f in again.functions} and FUNCTION_CALL_MARKER not in declined.chat
        assert [f["name"] for f in again.functions] == [f["name"] for f in row.functions if f["name"] != called]
        if len(row.functions) == 1:
            assert declined.system == SYSTEM_NO_FUNCTIONS
        last = again.turns[-1]
        removed = next(f for f in row.functions if f["name"] == called)
        assert last.role == "assistant" and removed["description"].rstrip(".")[1:].lower() in last.content.lower()
        assert again.turns[:-1] == row.turns[:len(again.turns) - 1] and again.turns[-2].role == "user"


def test_refusals_tell_a_result_a_description_names(sample_rows):
    """A description naming a result, not an action ("The area of a rectangle."), is refused as
    "... can't tell you the area of a rectangle", never "can't the area of a rectangle"."""
    raw = rows_with_calls(sample_rows)[0]
    row = parse_row(raw)
    called = next(t.calls[0].name for t in row.turns if t.role == "function_call")
    description = next(f["description"] for f in row.functions if f["name"] == called)
    noun_phrase = parse_row({**raw, "system": raw["system"].replace(description, "The area of a rectangle.")})
    for seed in range(6):
        reply = without_called_function(noun_phrase, random.Random(seed)).turns[-1].content
        assert "tell you the area of a rectangle" in reply and "can't the" not in reply, reply


def test_stand_ins_offer_another_rows_function_where_none_would_be_left(sample_rows):
    """With stand-ins, a declined row whose only function was the called one offers one function from
    another row (never the called one, nor a copy of it under another name); rows that keep a function
    of their own, and every row without the option, are declined as before."""
    rows = rows_with_calls(sample_rows)[:120]
    off, on = Augmentation(irrelevance_rate=1.0), Augmentation(irrelevance_rate=1.0, irrelevance_stand_in=True)
    stood_in = 0
    for index, raw in enumerate(rows):
        before, after = (parse_row(augment_row(raw, index, a, 5, rows)) for a in (off, on))
        row = parse_row(raw)
        called = next(t.calls[0] for t in row.turns if t.role == "function_call").name
        removed = next(f for f in row.functions if f["name"] == called)
        assert FUNCTION_CALL_MARKER not in after.chat and after.turns == before.turns
        if len(row.functions) > 1:
            assert after.system == before.system
            continue
        assert before.system == SYSTEM_NO_FUNCTIONS
        (stand_in,) = after.functions
        assert stand_in["name"] != called and stand_in["description"] != removed["description"]
        assert any(stand_in in parse_row(r).functions for r in rows)
        stood_in += 1
    assert stood_in > 10


def test_renamed_calls_fit_their_renamed_schemas(sample_rows):
    rng = random.Random(1)
    for raw in rows_with_calls(sample_rows):
        row = parse_row(raw)
        new = parse_row({"system": (r := renamed(row, rng)).system, "chat": r.chat})
        schemas = {f["name"]: f for f in new.functions}
        calls = [c for t in new.turns if t.role == "function_call" for c in t.calls]
        assert calls and all(call_problem(call, schemas) is None for call in calls)
        assert not {f["name"] for f in row.functions} & set(schemas)
        assert [f.get("description") for f in new.functions] == [f.get("description") for f in row.functions]
        assert [t.content for t in new.turns if t.role != "function_call"] == \
               [t.content for t in row.turns if t.role != "function_call"]


def test_augmentation_is_reproducible_and_off_by_default(sample_rows):
    rows = sample_rows[:200]
    assert [augment_row(r, i, Augmentation(), 7) for i, r in enumerate(rows)] == rows
    every = Augmentation(irrelevance_rate=0.3, rename_rate=0.5, shuffle_functions=True)
    first = [augment_row(r, i, every, 7) for i, r in enumerate(rows)]
    assert first == [augment_row(r, i, every, 7) for i, r in enumerate(rows)]
    assert first != [augment_row(r, i, every, 8) for i, r in enumerate(rows)]
    declined = sum(FUNCTION_CALL_MARKER in r["chat"] and FUNCTION_CALL_MARKER not in a["chat"]
                   for r, a in zip(rows, first))
    assert 0.15 < declined / len(rows_with_calls(rows)) < 0.45


def test_augmented_train_rows_are_tokenized_and_masked_as_others(tiny_tokenizer, tmp_path):
    """prepare_splits augments the train split only; a refusal is supervised like any assistant turn."""
    data = REPO / "data" / "sample_train.jsonl"
    plain_train, plain_dev = prepare_splits(str(data), tiny_tokenizer, 1024, 0.1, 3, report=False)
    draws, dev = prepare_splits(str(data), tiny_tokenizer, 1024, 0.1, 3, report=False,
                                augmentation=Augmentation(irrelevance_rate=1.0))
    train = draws.draw  # the first epoch's
    assert dev["input_ids"] == plain_dev["input_ids"] and len(train) == len(plain_train)
    calls = sum(FUNCTION_CALL_MARKER in tiny_tokenizer.decode(ids) for ids in train["input_ids"])
    assert calls == 0 < sum(FUNCTION_CALL_MARKER in tiny_tokenizer.decode(ids) for ids in plain_train["input_ids"])
    supervised = [tiny_tokenizer.decode([t for t in labels if t != -100]) for labels in train["labels"]]
    assert sum("I'm sorry" in s or "Unfortunately" in s or "I'm afraid" in s for s in supervised) > 0


def test_parallel_rows_ask_twice_and_call_twice_in_one_turn(sample_rows):
    """Two rows' requests in one message; both calls in one turn (a call per line), each valid for the
    offered schemas; a result per call, in order; both answers; a valid glaive row."""
    rng = random.Random(2)
    rows = [parse_row(r) for r in rows_with_calls(sample_rows)]
    made = 0
    for row, partner in zip(rows, rows[1:]):
        paired = with_parallel_calls(row, partner, rng)
        if paired is None:
            continue
        made += 1
        again = parse_row({"system": paired.system, "chat": paired.chat})
        assert again.chat == paired.chat and again.functions == paired.functions
        (turn,) = [t for t in again.turns if t.role == "function_call"]
        first, second = (next(t for t in r.turns if t.role == "function_call").calls[0] for r in (row, partner))
        assert turn.calls == [first, second] and turn.content.count(CALL_SEPARATOR + FUNCTION_CALL_MARKER) == 1
        schemas = {f["name"]: f for f in again.functions}
        assert all(call_problem(call, schemas) is None for call in turn.calls)
        index = again.turns.index(turn)
        assert [t.role for t in again.turns[index - 1:]] == ["user", "function_call", "function_response",
                                                             "function_response", "assistant"]
    assert made > len(rows) // 2


def test_parallel_rate_draws_partners_from_the_other_rows(sample_rows):
    rows = sample_rows[:100]
    out = [augment_row(r, i, Augmentation(parallel_rate=1.0), 5, rows) for i, r in enumerate(rows)]
    parallel = sum(CALL_SEPARATOR + FUNCTION_CALL_MARKER in r["chat"] for r in out)
    assert parallel > 0.5 * len(rows_with_calls(rows)) and out == [
        augment_row(r, i, Augmentation(parallel_rate=1.0), 5, rows) for i, r in enumerate(rows)]
    assert [augment_row(r, i, Augmentation(parallel_rate=1.0), 5) for i, r in enumerate(rows)] == rows  # no partners


def test_parallel_rows_list_values_where_they_can_else_join_two_requests(sample_rows):
    """Every shape users send: one function for values listed in one sentence (two or three calls),
    one function asked twice, two functions. With 10 functions most rows have a partner that calls
    their function with one value changed, so listing dominates here; the joined rows still take a
    same-function partner about half the time."""
    rows = sample_rows[:300]
    out = [augment_row(r, i, Augmentation(parallel_rate=1.0), 3, rows) for i, r in enumerate(rows)]
    shapes = {"listed": 0, "joined, one function": 0, "joined, two functions": 0}
    for raw, made in zip(rows, out):
        if CALL_SEPARATOR + FUNCTION_CALL_MARKER not in made["chat"]:
            continue
        turns = parse_row(made).turns
        index = next(i for i, t in enumerate(turns) if t.role == "function_call")
        calls, request = turns[index].calls, turns[index - 1].content
        own = next(t.content for t in parse_row(raw).turns[:index][::-1] if t.role == "user")
        separators = [join.split("{a}")[1].split("{b")[0] for join in augment.JOINS]
        if not any(own + separator in request for separator in separators):  # a list replaces the value
            assert len({call.name for call in calls}) == 1
            shapes["listed"] += 1
        else:
            assert len(calls) == 2
            shapes["joined, one function" if calls[0].name == calls[1].name else "joined, two functions"] += 1
    total = sum(shapes.values())
    assert shapes["listed"] > total / 2 and shapes["joined, one function"] > 0 and shapes["joined, two functions"] > 0


def _rebuilt(row: GlaiveRow) -> dict:
    return {"system": row.system, "chat": row.chat}


def test_listed_values_name_each_calls_value_in_one_request(sample_rows):
    """"the weather in Paris and Rome": the request is the row's own with its value replaced by the
    list; one call per value, equal but for that one argument, each valid; a result per call in order;
    a valid glaive row."""
    rows = [parse_row(r) for r in rows_with_calls(sample_rows)]
    rng = random.Random(4)
    made = {2: 0, 3: 0}
    for row in rows[:80]:
        listed = with_listed_values(row, rows, rng)
        if listed is None:
            continue
        again = parse_row(_rebuilt(listed))
        assert again.chat == listed.chat and again.functions == row.functions
        index = next(i for i, t in enumerate(again.turns) if t.role == "function_call")
        calls = again.turns[index].calls
        made[len(calls)] += 1
        original = next(t for t in row.turns if t.role == "function_call").calls[0]
        (key,) = {k for call in calls[1:] for k in call.arguments if call.arguments[k] != original.arguments[k]}
        assert calls[0] == original and all(call.arguments.keys() == original.arguments.keys() for call in calls)
        assert len({json.dumps(call.arguments[key]) for call in calls}) == len(calls)
        request = again.turns[index - 1].content
        old_request = next(t for t in reversed(row.turns[:row.turns.index(next(
            t for t in row.turns if t.role == "function_call"))]) if t.role == "user").content
        value = str(original.arguments[key])
        head, tail = old_request.split(value, 1)  # the request around the value is kept
        assert request.startswith(head.rstrip(augment.QUOTES)) and request.endswith(tail.lstrip(augment.QUOTES))
        assert all(str(call.arguments[key]) in request for call in calls)
        schemas = {f["name"]: f for f in again.functions}
        assert all(call_problem(call, schemas) is None for call in calls)
        assert [t.role for t in again.turns[index:]] == ["function_call"] + ["function_response"] * len(calls) + [
            "assistant"]
    assert made[2] > 5 and made[3] > 2


def _weather_row(request: str, location: str, unit: str = "celsius") -> GlaiveRow:
    weather = {"name": "get_weather", "description": "Get the current weather",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                              "unit": {"type": "string"}}}}
    call = json.dumps({"name": "get_weather", "arguments": json.dumps({"location": location, "unit": unit})})
    return parse_row({"system": build_system_prompt([weather]),
                      "chat": f"USER: {request}\n\n\nASSISTANT: <functioncall> {call} <|endoftext|>\n\n\n"
                              f"FUNCTION RESPONSE: {{\"temperature\": 20}}\n\n\n"
                              f"ASSISTANT: It is 20 degrees in {location}. <|endoftext|>\n\n\n"})


def test_listed_values_keep_quotes_and_whole_words():
    """A quoted value is listed as quoted values; a value found only inside a longer word, or more than
    once, is not listed (the request would not say which one the call took), nor a partner's value the
    request already names or an unquoted sentence."""
    rng = random.Random(0)
    other = _weather_row("How warm is Rome?", "Rome")
    quoted = with_listed_values(_weather_row('What is the weather in "Paris"?', "Paris"), [other], rng)
    assert quoted is not None and '"Paris"' in quoted.turns[0].content and '"Rome"' in quoted.turns[0].content
    assert with_listed_values(_weather_row("What is the weather in Parisville?", "Paris"), [other], rng) is None
    assert with_listed_values(_weather_row("Paris, Texas or Paris, France: Paris weather?", "Paris"), [other],
                              rng) is None
    paris = _weather_row("What is the weather in Paris?", "Paris")
    assert with_listed_values(paris, [_weather_row("And Rome.", "Rome.")], rng) is None  # a sentence, unquoted
    assert with_listed_values(_weather_row("Weather in Paris, not Rome?", "Paris"), [other], rng) is None  # named
    different_unit = _weather_row("How warm is Rome in fahrenheit?", "Rome", "fahrenheit")  # two values differ
    assert with_listed_values(_weather_row("What is the weather in Paris?", "Paris"), [different_unit], rng) is None


def test_each_augmentation_applies_at_its_own_rate(sample_rows):
    """Drawn independently: renaming is not limited to the rows irrelevance left alone."""
    rows = [r for r in rows_with_calls(sample_rows) if len(parse_row(r).functions) > 1]  # one is left to rename
    out = [augment_row(r, i, Augmentation(irrelevance_rate=0.5, rename_rate=0.5), 9) for i, r in enumerate(rows)]
    original = {f["name"] for r in rows for f in parse_row(r).functions}
    renamed_rows = [not {f["name"] for f in parse_row(r).functions} <= original for r in out]
    declined = [FUNCTION_CALL_MARKER not in r["chat"] for r in out]
    assert 0.4 < sum(renamed_rows) / len(rows) < 0.6 and 0.4 < sum(declined) / len(rows) < 0.6
    assert 0.15 < sum(a and b for a, b in zip(renamed_rows, declined)) / len(rows) < 0.35


def test_cached_rows_are_rebuilt_when_the_code_that_shapes_them_changes(tiny_tokenizer, tmp_path, monkeypatch):
    """datasets keys a cached map by the function's name, not its code: the digest of the row code is
    part of the key, so a new refusal text (here: patched in, with the digest a new version would have)
    reaches the rows instead of the cached ones."""
    from fcmistral.data import loading

    data = tmp_path / "rows.jsonl"
    data.write_text((REPO / "data" / "sample_train.jsonl").read_text())
    refuses = Augmentation(irrelevance_rate=1.0)
    before, _ = prepare_splits(str(data), tiny_tokenizer, 1024, 0.1, 3, report=False, augmentation=refuses)
    monkeypatch.setattr(augment, "REFUSALS", ("Nope, I cannot {task}.",))
    monkeypatch.setattr(loading, "row_code_digest", lambda: "a new version")
    after, _ = prepare_splits(str(data), tiny_tokenizer, 1024, 0.1, 3, report=False, augmentation=refuses)
    assert not any("Nope" in tiny_tokenizer.decode(ids) for ids in before.draw["input_ids"])
    assert any("Nope" in tiny_tokenizer.decode(ids) for ids in after.draw["input_ids"])


def test_parallel_rows_are_supervised_as_one_call_turn(tiny_tokenizer):
    draws, _ = prepare_splits(str(REPO / "data" / "sample_train.jsonl"), tiny_tokenizer, 1024, 0.1, 3, report=False,
                              augmentation=Augmentation(parallel_rate=1.0))
    train = draws.draw
    supervised = [tiny_tokenizer.decode([t for t in labels if t != -100]) for labels in train["labels"]]
    assert sum("'}" + CALL_SEPARATOR + FUNCTION_CALL_MARKER in s for s in supervised) > len(train) // 3
