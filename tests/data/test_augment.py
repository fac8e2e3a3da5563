"""Augmented rows (fcmistral/data/augment.py) are valid glaive rows, reproducible, and trained on as
ordinary rows."""

from __future__ import annotations

import random

from fcmistral.data.augment import Augmentation, augment_row, renamed, without_called_function
from fcmistral.data.loading import prepare_splits
from fcmistral.format.checks import call_problem
from fcmistral.format.glaive import parse_row
from fcmistral.prompt import FUNCTION_CALL_MARKER, SYSTEM_NO_FUNCTIONS
from tests.conftest import REPO


def rows_with_calls(sample_rows: list[dict]) -> list[dict]:
    return [r for r in sample_rows if FUNCTION_CALL_MARKER in r["chat"]]


def test_irrelevance_removes_the_called_function_and_declines(sample_rows):
    rng = random.Random(0)
    for raw in rows_with_calls(sample_rows):
        row = parse_row(raw)
        called = next(t.call.name for t in row.turns if t.role == "function_call")
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


def test_renamed_calls_fit_their_renamed_schemas(sample_rows):
    rng = random.Random(1)
    for raw in rows_with_calls(sample_rows):
        row = parse_row(raw)
        new = parse_row({"system": (r := renamed(row, rng)).system, "chat": r.chat})
        schemas = {f["name"]: f for f in new.functions}
        calls = [t.call for t in new.turns if t.role == "function_call"]
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
    train, dev = prepare_splits(str(data), tiny_tokenizer, 1024, 0.1, 3, report=False,
                                augmentation=Augmentation(irrelevance_rate=1.0))
    assert dev["input_ids"] == plain_dev["input_ids"] and len(train) == len(plain_train)
    calls = sum(FUNCTION_CALL_MARKER in tiny_tokenizer.decode(ids) for ids in train["input_ids"])
    assert calls == 0 < sum(FUNCTION_CALL_MARKER in tiny_tokenizer.decode(ids) for ids in plain_train["input_ids"])
    supervised = [tiny_tokenizer.decode([t for t in labels if t != -100]) for labels in train["labels"]]
    assert sum("I'm sorry" in s or "Unfortunately" in s or "I'm afraid" in s for s in supervised) > 0
