"""The wide generated data (fcmistral/demo/wide_data.py): valid glaive rows whose calls fit their
schemas, at least 200 functions of every JSON type, and held-out functions never seen in training."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from fcmistral.demo.wide_data import function_names, generate
from fcmistral.format.checks import call_problem
from fcmistral.format.glaive import parse_row
from tests.conftest import REPO


def _types(schema: dict) -> set[str]:
    found = {"enum"} if "enum" in schema else set()
    found.add(schema.get("type", "?"))
    for child in (schema.get("properties") or {}).values():
        found |= _types(child)
    return found | (_types(schema["items"]) if isinstance(schema.get("items"), dict) else set())


def _numbers(value) -> list:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_rows_are_valid_wide_and_held_out_functions_are_unseen():
    train, heldout = generate(1500, 150)
    assert len(function_names(train)) >= 200 and not function_names(train) & function_names(heldout)
    assert len(function_names(heldout)) == 40
    kinds, types, optional_left_out = set(), set(), 0
    for raw in train + heldout:
        row = parse_row(raw)
        assert row.text == raw["system"] + raw["chat"]
        schemas = {f["name"]: f for f in row.functions}
        for function in row.functions:
            types |= _types(function["parameters"])
        calls = [c for t in row.turns if t.role == "function_call" for c in t.calls]
        assert all(call_problem(call, schemas) is None for call in calls), raw
        kinds.add(tuple(t.role for t in row.turns) + (len(calls),))
        optional_left_out += any(set(schemas[c.name]["parameters"]["properties"]) - set(c.arguments) for c in calls)
    assert {"string", "integer", "number", "boolean", "array", "object", "enum"} <= types
    patterns = {k[:-1] for k in kinds}
    assert ("user", "function_call", "function_response", "function_response", "assistant") in patterns  # parallel
    assert ("user", "assistant", "user", "function_call", "function_response", "assistant") in patterns  # clarify
    assert ("user", "assistant") in patterns and optional_left_out > 100  # refusals; optional arguments vary
    refusals = {row.turns[-1].content for row in map(parse_row, train) if [t.role for t in row.turns] == ["user", "assistant"]
                and row.functions}
    assert len(refusals) > 30  # many different requests declined, not one


def test_the_command_writes_both_files_and_never_overwrites(tmp_path):
    command = [sys.executable, "-m", "fcmistral.demo.wide_data", "--out_dir", str(tmp_path), "--train_rows", "50",
               "--heldout_rows", "5"]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in (tmp_path / "wide_train.jsonl").read_text().splitlines()]
    assert len(rows) == 50 and len((tmp_path / "wide_heldout.jsonl").read_text().splitlines()) == 5
    assert len((tmp_path / "wide_heldout_fields.jsonl").read_text().splitlines()) == 100
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "--overwrite" in again.stderr


def test_general_share_replaces_train_rows_with_other_fields_and_keeps_the_held_out_rows():
    """``--general_share``: rows calling functions of other fields (finance, physics, statistics...)
    replace that share of the train rows, whose calls fit their schemas; the other train rows and the
    held-out rows are those of the data without them, so runs are compared on the same held-out file."""
    from fcmistral.demo.general_functions import general_groups

    train, heldout = generate(1000, 100)
    mixed, mixed_heldout = generate(1000, 100, general_share=0.3)
    assert mixed_heldout == heldout
    general = {op.name for group in general_groups() for op in group}
    replaced = [row for row, before in zip(mixed, train) if row != before]
    assert 200 < len(replaced) < 400
    assert all(function_names([row]) <= general for row in replaced)
    assert len(function_names(replaced)) == len(general) >= 30
    types = set()
    for raw in replaced:
        row = parse_row(raw)
        schemas = {f["name"]: f for f in row.functions}
        calls = [c for t in row.turns if t.role == "function_call" for c in t.calls]
        assert all(call_problem(c, schemas) is None for c in calls), raw
        # Numbers as the request writes them: a whole amount is 5, never 5.0 (taught that, a model
        # wrote 20.0 for integer parameters too).
        assert not [v for c in calls for v in _numbers(c.arguments) if isinstance(v, float) and v == int(v)], raw
        for function in row.functions:
            types |= _types(function["parameters"])
    assert {"string", "integer", "number", "boolean", "array", "object", "enum"} <= types


def test_the_command_takes_a_general_share_and_refuses_one_out_of_range(tmp_path):
    from fcmistral.demo.general_functions import general_groups

    command = [sys.executable, "-m", "fcmistral.demo.wide_data", "--out_dir", str(tmp_path), "--train_rows", "60",
               "--heldout_rows", "5"]
    done = subprocess.run([*command, "--general_share", "0.5"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "wide_train.jsonl").read_text().splitlines()]
    assert function_names(rows) & {op.name for group in general_groups() for op in group}
    refused = subprocess.run([*command, "--general_share", "1.5", "--overwrite"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --general_share")
    refused = subprocess.run([*command, "--several_values_share", "-0.1", "--overwrite"], cwd=REPO, capture_output=True,
                             text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --several_values_share")
    refused = subprocess.run([*command, "--composed_share", "2", "--overwrite"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --composed_share")


def test_several_values_share_replaces_train_rows_with_one_call_per_value_named():
    """``--several_values_share``: requests naming two to four values of one argument ("in Paris and in
    Tokyo") replace that share of the train rows, answered by one call per value in one turn, then
    every result and one answer; the other rows and the held-out rows are those of the data without them."""
    from fcmistral.demo.general_functions import general_groups

    train, heldout = generate(600, 50, general_share=0.3)
    mixed, mixed_heldout = generate(600, 50, general_share=0.3, several_values_share=0.3)
    assert mixed_heldout == heldout
    replaced = [parse_row(row) for row, before in zip(mixed, train) if row != before]
    assert 120 < len(replaced) < 240
    general = {op.name for group in general_groups() for op in group}
    assert function_names([{"system": r.system} for r in replaced]) & general  # the other fields' too
    counts = set()
    for row in replaced:
        calls = row.turns[1].calls
        counts.add(len(calls))
        roles = ["user", "function_call"] + ["function_response"] * len(calls) + ["assistant"]
        assert [t.role for t in row.turns] == roles
        schemas = {f["name"]: f for f in row.functions}
        assert len({c.name for c in calls}) == 1 and all(call_problem(c, schemas) is None for c in calls), row.text
        varied = {key for c in calls for key in c.arguments if c.arguments[key] != calls[0].arguments[key]}
        assert len(varied) == 1 and all(c.arguments.keys() == calls[0].arguments.keys() for c in calls), row.text
        (key,) = varied
        values = [c.arguments[key] for c in calls]
        assert len(set(map(str, values))) == len(values)  # one call per value, none twice
        request = row.turns[0].content.lower()
        written = [{v.lower(), v.lower().replace("_", " ")} if isinstance(v, str) else {str(v), f"{v:,}", f"{v:g}"}
                   for v in values]
        assert all(any(w in request for w in ways) for ways in written), row.text
    assert counts == {2, 3, 4}


def test_composed_share_replaces_train_rows_with_composed_functions():
    """``--composed_share``: rows calling functions composed from the library of optional parameters
    replace that share of the train rows; their calls fit their schemas and copy every value from the
    request (none made up); the optional parameters go by many names and sit anywhere after the
    subject; the other rows and the held-out rows are those of the data without them."""
    from fcmistral.demo.composed_functions import composed_groups

    train, heldout = generate(600, 50, general_share=0.3)
    mixed, mixed_heldout = generate(600, 50, general_share=0.3, composed_share=0.3)
    assert mixed_heldout == heldout
    composed = [op for group in composed_groups() for op in group]
    assert len({op.name for op in composed}) == len(composed) >= 100
    optional = [a for op in composed for a in op.arguments if not a[2]]
    assert len({a[0] for a in optional}) >= 25
    assert any(not op.arguments[i][2] and op.arguments[i + 1][2] for op in composed for i in range(len(op.arguments) - 1))
    replaced = [parse_row(row) for row, before in zip(mixed, train) if row != before]
    assert 120 < len(replaced) < 240
    assert function_names([{"system": r.system} for r in replaced]) <= {op.name for op in composed}
    types, copied = set(), 0
    for row in replaced:
        schemas = {f["name"]: f for f in row.functions}
        for function in row.functions:
            types |= _types(function["parameters"])
        calls = [c for t in row.turns if t.role == "function_call" for c in t.calls]
        assert all(call_problem(c, schemas) is None for c in calls), row.text
        if [t.role for t in row.turns][:2] == ["user", "function_call"] and len(calls) == 1:
            request = row.turns[0].content
            for value in calls[0].arguments.values():
                if not isinstance(value, bool):
                    assert (value if isinstance(value, str) else f"{value:g}") in request, row.text
                    copied += 1
    assert {"string", "integer", "number", "boolean", "enum"} <= types and copied > 100


def test_follow_up_share_lets_refusals_go_on_with_a_request_an_offered_function_serves():
    """``--follow_up_share``: that share of the train rows' refusals go on with the user's next request
    and a call of an offered function that fits its schema (the refusal hands the conversation back,
    and training supervises the USER tag after it); every other row and the held-out rows are unchanged."""
    train, heldout = generate(1500, 50, general_share=0.3, composed_share=0.3)
    mixed, mixed_heldout = generate(1500, 50, general_share=0.3, composed_share=0.3, follow_up_share=1.0)
    assert mixed_heldout == heldout
    changed = [(parse_row(row), parse_row(before)) for row, before in zip(mixed, train) if row != before]
    refusals = [raw for raw in train if raw["chat"].count("ASSISTANT:") == 1 and "<functioncall>" not in raw["chat"]
                and "no access to external functions" not in raw["system"]]
    assert 60 < len(changed) <= len(refusals)  # (the sample data's own refusals stay as they are)
    for row, before in changed:
        assert row.system == before.system and row.turns[:2] == before.turns
        assert [t.role for t in row.turns] == ["user", "assistant", "user", "function_call", "function_response",
                                               "assistant"]
        schemas = {f["name"]: f for f in row.functions}
        assert all(call_problem(c, schemas) is None for c in row.turns[3].calls), row.text


def test_refusals_name_a_task_the_sentence_can_hold():
    """A refusal of a function whose description names a result ("The area of a rectangle") says it can't
    tell you that result: "I can't the area of a rectangle" is a sentence the trained model copied into
    its replies. Every refusal's phrase names an action, here and in the irrelevance augmentation."""
    train, _ = generate(1500, 50, general_share=0.3, composed_share=0.3)
    tasks = [re.search(r"(?:can't|unable to|can|function to) (\S+)", row.turns[1].content).group(1)
             for row in map(parse_row, train) if [t.role for t in row.turns][:2] == ["user", "assistant"]
             and row.functions and len(row.turns) == 2]
    assert len(tasks) > 60 and "tell" in tasks
    assert not {t for t in tasks if t.lower() in {"the", "a", "an", "how", "recommended", "roasting"}}
