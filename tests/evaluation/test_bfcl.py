"""BFCL: rendering questions, scoring with BFCL's checker (hand-made replies with known verdicts),
BFCL's group figures, the shipped data, and evaluate.py --benchmark bfcl end to end."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from unittest import mock

import pytest

from fcmistral.errors import UserError
from fcmistral.evaluation.bfcl_data import (
    CATEGORY_FILES,
    NO_ANSWER_CATEGORIES,
    category_file,
    installed_data_dir,
    load_bfcl_items,
    parse_categories,
    question_turns,
    tool_schema,
)
from fcmistral.evaluation.bfcl_scoring import judge_bfcl, summarize_bfcl
from fcmistral.prompt import Turn, format_call
from tests.conftest import read_jsonl, run_script

pytest.importorskip("bfcl.eval_checker.ast_eval.ast_checker",
                    reason="BFCL's checker comes from nvidia-bfcl: pip install --no-deps nvidia-bfcl==26.3")

TRIANGLE = {"name": "geometry.triangle_area", "description": "Area of a triangle.", "parameters": {
    "type": "dict", "required": ["base", "height"], "properties": {
        "base": {"type": "integer", "description": "The base."},
        "height": {"type": "float", "description": "The height."},
        "unit": {"type": "string", "description": "The unit."}}}}
TRIANGLE_ANSWER = {"geometry.triangle_area": {"base": [10], "height": [5.0], "unit": ["units", "cm", ""]}}
WEATHER = {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "dict", "required": ["city"], "properties": {"city": {"type": "string", "description": "City."}}}}


def call(name: str, **arguments) -> str:
    return format_call(name, arguments)


def verdict(output: str, category: str = "simple", functions=(TRIANGLE,), answer=(TRIANGLE_ANSWER,)) -> dict:
    record = {"category": category, "functions": list(functions),
              "possible_answer": None if category in NO_ANSWER_CATEGORIES else list(answer), "output": output}
    return judge_bfcl(record)


@pytest.mark.parametrize(
    "output, outcome",
    [
        (call("geometry_triangle_area", base=10, height=5.0, unit="units"), "correct"),  # dotted name shown with _
        (call("geometry_triangle_area", base=10, height=5.0), "correct"),  # "" in the list: may be left out
        (call("geometry_triangle_area", base=10, height=5, unit="CM"), "correct"),  # int for float; case-free
        (call("geometry_triangle_area", base=10, height=5.0, unit="u-nits"), "correct"),  # BFCL strips -_.,/ etc.
        (call("geometry_triangle_area", base=10.0, height=5.0), "wrong_arguments"),  # float for int: type error
        (call("geometry_triangle_area", base=True, height=5.0), "wrong_arguments"),  # bool is not int
        (call("geometry_triangle_area", base=10, height=5.0, unit="inches"), "wrong_arguments"),  # not acceptable
        (call("geometry_triangle_area", base=10), "wrong_arguments"),  # required argument missing
        (call("geometry_triangle_area", base=10, height=5.0, colour="red"), "wrong_arguments"),  # unknown argument
        (call("triangle_area", base=10, height=5.0), "wrong_function"),
        (call("geometry_triangle_area", base=10, height=5.0) + " " + call("get_weather", city="x"), "wrong_count"),
        ("The area is 25.", "no_call"),
        ("""<functioncall> {"name": "geometry_triangle_area", "arguments": '{"base": 10,""", "parse_failure"),
        (call("geometry_triangle_area", base=10, height=5.0) + "\n\n\nUSER: thanks", "correct"),  # invented turn cut
    ],
)
def test_simple_question_verdicts(output, outcome):
    result = verdict(output)
    assert result["outcome"] == outcome
    assert result["valid"] == (outcome == "correct")


def test_parallel_calls_match_in_any_order_and_across_turns():
    answer = ({"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Rome", "Roma"]}})
    run = lambda output: verdict(output, "parallel", (WEATHER,), answer)  # noqa: E731
    paris, rome = call("get_weather", city="Paris"), call("get_weather", city="Roma")
    assert run(f"{rome} {paris}")["valid"]
    assert run(f"{paris} <|endoftext|>\n\n\nASSISTANT: {rome}")["valid"]
    assert run(paris)["outcome"] == "wrong_count"
    assert run(f"{paris} {call('get_weather', city='Oslo')}")["outcome"] == "wrong_arguments"


def test_multiple_category_needs_the_right_function_among_several():
    answer = (TRIANGLE_ANSWER,)
    assert verdict(call("geometry_triangle_area", base=10, height=5.0), "multiple", (WEATHER, TRIANGLE), answer)["valid"]
    assert verdict(call("get_weather", city="x"), "multiple", (WEATHER, TRIANGLE), answer)["outcome"] == "wrong_function"


@pytest.mark.parametrize(
    "category, output, outcome",
    [
        ("irrelevance", "I cannot do that with these tools.", "correct"),
        ("irrelevance", call("get_weather", city="x"), "hallucinated"),
        # BFCL: a reply its decoder cannot read holds no call, which is right here
        ("irrelevance", """<functioncall> {"name": "get_weather", "arguments": '{"ci""", "correct"),
        ("live_irrelevance", call("get_weather", city="x"), "hallucinated"),
        ("live_relevance", call("get_weather", city="anywhere"), "correct"),
        ("live_relevance", "No.", "no_call"),
    ],
)
def test_relevance_categories(category, output, outcome):
    assert verdict(output, category, (WEATHER,))["outcome"] == outcome


def test_summary_groups_as_bfcl_does():
    def records(category: str, correct: int, wrong: int) -> list[dict]:
        return ([{"category": category, "outcome": "correct"}] * correct
                + [{"category": category, "outcome": "wrong_arguments"}] * wrong)

    summary = summarize_bfcl(records("simple", 3, 1) + records("multiple", 1, 3) + records("live_simple", 1, 0)
                             + records("live_multiple", 0, 3) + records("irrelevance", 2, 2))
    assert summary["non_live_ast"] == pytest.approx((0.75 + 0.25) / 2)  # unweighted over categories
    assert summary["live_ast"] == pytest.approx(1 / 4)  # weighted by size: (1 + 0) / (1 + 3)
    assert summary["hallucination"] == pytest.approx(0.5)
    assert summary["overall"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    assert summary["per_category"]["multiple"] == {
        "n": 4, "accuracy": 0.25, "no_call": 0, "parse_failure": 0, "wrong_count": 0, "wrong_function": 0,
        "wrong_arguments": 3, "hallucinated": 0}
    only_simple = summarize_bfcl(records("simple", 1, 1))
    assert (only_simple["overall"], only_simple["live_ast"]) == (0.5, None)


def test_functions_are_shown_with_json_schema_types():
    schema = tool_schema({"name": "a.b.c", "description": "d", "parameters": {"type": "dict", "properties": {
        "x": {"type": "float", "description": "X."},
        "t": {"type": "tuple", "items": {"type": "float"}, "description": "T."},
        "d": {"type": "dict", "properties": {"k": {"type": "any", "description": "K."}}, "description": "D."},
        "n": {"type": "float"}}}})
    assert schema["name"] == "a_b_c" and schema["parameters"]["type"] == "object"
    props = schema["parameters"]["properties"]
    assert props["x"] == {"type": "number", "format": "float", "description": "X. This is a float type value."}
    assert props["t"]["type"] == "array" and props["t"]["items"] == {"type": "number"}
    assert props["d"]["type"] == "object" and props["d"]["properties"]["k"]["type"] == "string"
    assert props["n"]["description"] == " This is a float type value."  # no description: BFCL's helper raises


def test_system_messages_become_user_text():
    turns = question_turns([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Weather?"}])
    assert turns == [Turn("user", "Be brief.\n\nHi"), Turn("assistant", "Hello"), Turn("user", "Weather?")]


def test_category_files_and_bad_categories(tmp_path):
    for name in ("BFCL_v4_irrelevance.json", "BFCL_v4_live_irrelevance.json", "BFCL_v3_simple.json",
                 "BFCL_v3_multiple.json", "BFCL_v4_multiple.json"):
        (tmp_path / name).write_text("")
    assert category_file(tmp_path, "irrelevance").name == "BFCL_v4_irrelevance.json"  # not live_irrelevance
    assert category_file(tmp_path, "simple").name == "BFCL_v3_simple.json"  # v3's name for simple_python
    assert category_file(tmp_path, "multiple").name == "BFCL_v4_multiple.json"  # the newest version
    with pytest.raises(UserError, match="no BFCL_v\\*_parallel.json"):
        category_file(tmp_path, "parallel")
    with pytest.raises(UserError, match="unknown BFCL categories \\['simpel'\\]"):
        parse_categories("simple,simpel")
    assert parse_categories("simple, irrelevance,simple") == ["simple", "irrelevance"]


def shipped_data():
    folder = installed_data_dir()
    if folder is None:
        pytest.skip("no BFCL data installed: pip install --no-deps bfcl-eval==2026.3.23")
    return folder


def first_acceptable(values):
    """A value the answer accepts: the first non-"" entry, nested dict answers filled likewise."""
    value = next(v for v in values if v != "") if isinstance(values, list) else values
    if isinstance(value, dict):
        return {k: first_acceptable(v) for k, v in value.items() if not isinstance(v, list) or any(x != "" for x in v)}
    return [first_acceptable([v]) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value


def unreachable(functions: list[dict], answer: list[dict]) -> bool:
    """Whether an answer names an argument its function lacks, lets a required one be left out, or
    accepts no value at all for one (an empty list)."""
    by_name = {f["name"]: f["parameters"] for f in functions}
    for expected in answer:
        (name, arguments), = expected.items()
        parameters = by_name[name]
        if set(arguments) - set(parameters.get("properties", {})) or [] in arguments.values():
            return True
        if any(p not in arguments or "" in arguments[p] for p in parameters.get("required", [])):
            return True
    return False


def test_every_shipped_answer_is_reachable():
    """A reply built from each answer's first acceptable values passes BFCL's checker, except where the
    answer cannot be reached (BFCL data errors, a handful of rows): the whole path (rendered
    names, the call text, parsing, mapping names back, the checker) agrees with BFCL's answers."""
    categories = [c for c in CATEGORY_FILES if c not in NO_ANSWER_CATEGORIES]
    items = load_bfcl_items(categories, str(shipped_data()), None)
    assert len(items) > 2000
    failures = []
    for item in items:
        reply = " ".join(format_call(tool_schema(next(f for f in item.functions if f["name"] == name))["name"],
                                     first_acceptable(dict(arguments)) if arguments else {})
                         for expected in item.possible_answer for name, arguments in expected.items())
        if not judge_bfcl({**item.record_fields(), "output": reply})["valid"]:
            failures.append(item)
    assert len(failures) < len(items) / 100
    assert [i.query_id for i in failures if not unreachable(i.functions, i.possible_answer)] == []


def test_rendering_agrees_with_bfcls_own_helper(monkeypatch):
    """BFCL's convert_to_tool (its module imports tree_sitter and tenacity, absent here: stubbed) gives
    the same schemas on every function of every category."""
    for name in ("tree_sitter", "tree_sitter_java", "tree_sitter_javascript", "tenacity"):
        monkeypatch.setitem(sys.modules, name, mock.MagicMock())
    before = set(sys.modules)
    try:
        utils = importlib.import_module("bfcl.model_handler.utils")
    finally:  # the stubbed modules must not outlive this test
        for name in set(sys.modules) - before:
            del sys.modules[name]
    folder = shipped_data()
    functions = [f for c in CATEGORY_FILES for row in read_jsonl(category_file(folder, c)) for f in row["function"]]
    described = [f for f in functions if all("description" in p or p.get("type") != "float"
                                             for p in f["parameters"]["properties"].values())]
    assert len(described) > 0.99 * len(functions)
    theirs = utils.convert_to_tool(copy.deepcopy(described), utils.GORILLA_TO_OPENAPI, utils.ModelStyle.OSSMODEL)
    assert [tool_schema(f) for f in described] == theirs


def bfcl_folder(tmp_path):
    """A local BFCL-format folder: two simple questions and one irrelevance question."""
    rows = [{"id": f"simple_{i}", "question": [[{"role": "user", "content": f"Area of a triangle, base {b}, height 5?"}]],
             "function": [TRIANGLE]} for i, b in enumerate((10, 7))]
    answers = [{"id": "simple_0", "ground_truth": [TRIANGLE_ANSWER]},
               {"id": "simple_1", "ground_truth": [{"geometry.triangle_area": {"base": [7], "height": [5.0]}}]}]
    irrelevant = [{"id": "irrelevance_0", "question": [[{"role": "user", "content": "Who wrote Hamlet?"}]],
                   "function": [WEATHER]}]
    folder = tmp_path / "bfcl"
    (folder / "possible_answer").mkdir(parents=True)
    for name, lines in (("BFCL_v4_simple_python.json", rows), ("possible_answer/BFCL_v4_simple_python.json", answers),
                        ("BFCL_v4_irrelevance.json", irrelevant)):
        (folder / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


@pytest.mark.slow
def test_evaluate_bfcl_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    result = run_script("evaluate.py", "--model_path", str(tiny_model_dir), "--benchmark", "bfcl",
                        "--categories", "simple,irrelevance", "--bfcl_data", str(bfcl_folder(tmp_path)),
                        "--output_dir", str(out), "--max_new_tokens", "16", "--batch_size", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["categories_run"] == ["simple", "irrelevance"]
    assert summary["per_category"]["simple"]["n"] == 2
    assert "| simple | 2 |" in result.stdout
    records = read_jsonl(out / "predictions.jsonl")
    assert {r["query_id"] for r in records} == {"simple_0", "simple_1", "irrelevance_0"}
    assert all(r["outcome"] in {"correct", "no_call", "parse_failure", "wrong_count", "wrong_function",
                                "wrong_arguments", "hallucinated"} for r in records)
    # re-scoring a file where the model wrote the right call, without a model or the data folder
    fixed = tmp_path / "fixed" / "predictions.jsonl"
    fixed.parent.mkdir()
    good = {"simple_0": call("geometry_triangle_area", base=10, height=5.0),
            "simple_1": call("geometry_triangle_area", base=7, height=5), "irrelevance_0": "Shakespeare."}
    fixed.write_text("".join(json.dumps({**r, "output": good[r["query_id"]]}) + "\n" for r in records))
    rescored = run_script("evaluate.py", "--predictions", str(fixed))
    assert rescored.returncode == 0, rescored.stderr
    assert json.loads((fixed.parent / "summary.json").read_text())["overall"] == 1.0


def test_bfcl_bad_input(tmp_path):
    folder = bfcl_folder(tmp_path)
    (folder / "possible_answer" / "BFCL_v4_simple_python.json").unlink()
    with pytest.raises(UserError, match="no possible answers for 'simple'"):
        load_bfcl_items(["simple"], str(folder), None)
    with pytest.raises(UserError, match="is not a folder"):
        load_bfcl_items(["simple"], str(tmp_path / "missing"), None)
    result = run_script("evaluate.py", "--model_path", str(tmp_path), "--benchmark", "bfcl", "--categories", "nope",
                        "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown BFCL categories ['nope']")
    result = run_script("evaluate.py", "--model_path", str(tmp_path), "--categories", "simple")
    assert result.returncode == 2 and "add --benchmark bfcl" in result.stderr
