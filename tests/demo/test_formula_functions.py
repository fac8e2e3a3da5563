"""The formulas of fcmistral/demo/formula_functions.py: the wide data's ``--formula_share`` rows and
its held-out fields file, whose functions no training row calls."""

from __future__ import annotations

import json
import subprocess
import sys

from fcmistral.demo.formula_functions import formula_groups
from fcmistral.demo.wide_data import function_names, generate, heldout_fields
from fcmistral.format.checks import call_problem
from fcmistral.format.glaive import parse_row
from tests.conftest import REPO
from tests.demo.test_wide_data import _numbers

ALL_SHARES = {"general_share": 0.3, "several_values_share": 0.15, "composed_share": 0.3, "follow_up_share": 1.0}


def _calls_and_requests(raw: dict) -> list[tuple[str, list]]:
    """Each call turn's calls with every user turn before it (a clarified value comes in a later one)."""
    row = parse_row(raw)
    schemas = {f["name"]: f for f in row.functions}
    found, request = [], ""
    for turn in row.turns:
        if turn.role == "user":
            request += turn.content + "\n"
        elif turn.role == "function_call":
            assert all(call_problem(call, schemas) is None for call in turn.calls), raw
            found.append((request, turn.calls))
    return found


def test_each_function_has_its_own_name_and_one_property_per_argument():
    training, held_out = formula_groups(), formula_groups(held_out=True)
    names = [op.name for group in training + held_out for op in group]
    assert len(names) == len(set(names)) >= 100
    assert all(len(op.schema["parameters"]["properties"]) == len(op.arguments) for group in training + held_out
               for op in group)
    assert [op.schema for g in formula_groups() for op in g] == [op.schema for g in training for op in g]  # seeded


def test_formula_share_replaces_train_rows_and_the_held_out_fields_are_never_trained_on():
    """``--formula_share``: rows calling the training fields' formulas replace that share of the train
    rows (the others and the held-out file unchanged); the held-out fields' functions occur in no
    training row with every option on, and their rows' calls fit their schemas."""
    train, heldout = generate(1000, 100, **ALL_SHARES)
    mixed, mixed_heldout = generate(1000, 100, **ALL_SHARES, formula_share=0.3)
    assert mixed_heldout == heldout
    training = {op.name for group in formula_groups() for op in group}
    replaced = [row for row, before in zip(mixed, train) if row != before]
    assert 200 < len(replaced) < 400 and all(function_names([row]) <= training for row in replaced)
    fields = heldout_fields(100)
    held_out = function_names(fields)
    assert len(held_out) >= 25 and not held_out & function_names(mixed)
    assert {op.name for field in formula_groups(held_out=True) for op in field} == held_out


def test_every_value_of_a_call_is_written_in_its_request_as_the_call_writes_it():
    """The model copies values: each number of a call appears in the request as JSON writes it (5, not
    5.0; 5.97e+24, not "5.97 times ten to the 24"), so a held-out mistake is a reading, not a conversion."""
    rows = heldout_fields(100) + generate(300, 10, formula_share=1.0)[0]
    checked = 0
    for raw in rows:
        for request, calls in _calls_and_requests(raw):
            for call in calls:
                for value in _numbers(call.arguments):
                    written = json.dumps(value)
                    assert not written.endswith(".0"), raw
                    checked += 1
                    assert written in request, (written, request)
    assert checked > 300


def test_the_command_writes_the_held_out_fields_and_takes_a_formula_share(tmp_path):
    command = [sys.executable, "-m", "fcmistral.demo.wide_data", "--out_dir", str(tmp_path), "--train_rows", "60",
               "--heldout_rows", "5", "--heldout_field_rows", "7", "--formula_share", "0.5"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "wide_train.jsonl").read_text().splitlines()]
    assert function_names(rows) & {op.name for group in formula_groups() for op in group}
    fields = [json.loads(line) for line in (tmp_path / "wide_heldout_fields.jsonl").read_text().splitlines()]
    assert fields == heldout_fields(7)
    for option, value in (("--formula_share", "1.5"), ("--heldout_field_rows", "-1")):
        refused = subprocess.run([*command, option, value, "--overwrite"], cwd=REPO, capture_output=True, text=True)
        assert refused.returncode == 1 and refused.stderr.startswith(f"error: {option}"), refused.stderr
