"""Evaluation: gold parsing, scoring on hand-made predictions, and evaluate.py end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fcmistral.arguments import ModelArguments
from fcmistral.constraint import CallConstraint
from fcmistral.errors import UserError
from fcmistral.evaluation.items import eval_items
from fcmistral.evaluation.scoring import judge, summarize, summary_markdown
from fcmistral.format.pycall import PythonCallError, parse_python_call
from fcmistral.format.schemas import load_schemas, parse_function_text, schema_from_api_entry
from fcmistral.prompt import FunctionCall, format_call
from tests.conftest import REPO, SHARED_DATA, read_jsonl, run_script


@pytest.mark.parametrize(
    "source, name, arguments",
    [
        ("r = nvdlib.searchCPE(keywordSearch = 'Microsoft Exchange 2010', limit = 2)", "searchCPE",
         {"keywordSearch": "Microsoft Exchange 2010", "limit": 2}),
        ('vt_get_domain_report(domain = "cloudflare.com", x_apikey = "my_api")', "vt_get_domain_report",
         {"domain": "cloudflare.com", "x_apikey": "my_api"}),
        ("f(z= 3,  x= 4,  y= 2)", "f", {"z": 3, "x": 4, "y": 2}),
        ("g(a=True, b=None, c=[1, 'x'], d=-1.5, e=\"it's\")", "g", {"a": True, "b": None, "c": [1, "x"], "d": -1.5, "e": "it's"}),
        # argument names that are Python keywords (real toolalpaca references)
        ('convertCurrency(from="EUR", to="GBP", amount=5000)', "convertCurrency", {"from": "EUR", "to": "GBP", "amount": 5000}),
        ("f(x=(1, 2), y={3, 1}, z=((0,),))", "f", {"x": [1, 2], "y": [1, 3], "z": [[0]]}),  # tuples, sets: lists
    ],
)
def test_python_references_parse_without_eval(source, name, arguments):
    assert parse_python_call(source) == FunctionCall(name, arguments)


@pytest.mark.parametrize("source", ["f(1, 2)", "f(x=os.system('rm'))", "import os", "f(**kw)", "not python (",
                                    "f(x=b'bytes')", "f(if=)"])
def test_unsafe_or_ambiguous_references_are_refused(source):
    with pytest.raises(PythonCallError):
        parse_python_call(source)


def test_every_real_nexus_reference_parses():
    path = SHARED_DATA / "nexus_raw_queries_cve_cpe_emailrep.jsonl"
    if not path.exists():
        pytest.skip("../shared/data is not beside this checkout")
    rows = read_jsonl(path)
    calls = [parse_python_call(json.loads(r["query_dict"])["reference"]) for r in rows]
    assert len(calls) == 116
    assert {c.name for c in calls} >= {"searchCPE", "searchCVE", "emailrep_post", "emailrep_report"}


def gold(name="say", **arguments) -> FunctionCall:
    return FunctionCall(name, arguments)


def record(output: str, gold_call: FunctionCall) -> dict:
    return {"gold_call": {"name": gold_call.name, "arguments": gold_call.arguments}, **judge(output, gold_call)}


def test_scoring_with_known_answers():
    apostrophe = gold(text="let's go")
    records = [
        record(format_call("say", {"text": "let's go"}), apostrophe),  # exact, apostrophe kept
        record(format_call("say", {"text": "lets go"}), apostrophe),  # the original's corruption: wrong
        record('<functioncall> {"name": "say", "arguments": \'{"text": ', apostrophe),  # parse failure
        record("I cannot help with that.", apostrophe),  # no call
        record(format_call("shout", {"text": "let's go"}), apostrophe),  # wrong function
        record(format_call("add", {"x": "2", "unit": "Celsius"}), gold("add", x=2, unit="celsius")),  # relaxed only
    ]
    summary = summarize(records)
    assert summary["n"] == 6
    assert summary["exact_match"] == pytest.approx(1 / 6)
    assert summary["name_accuracy"] == pytest.approx(3 / 6)
    assert summary["relaxed_match"] == pytest.approx(2 / 6)
    assert (summary["parse_failures"], summary["no_call"]) == (1, 1)
    assert summary["per_function"]["say"]["called_instead"] == {"<unparseable>": 1, "<no call>": 1, "shout": 1}
    assert summary["per_function"]["add"] == {"n": 1, "exact_match": 0.0, "name_accuracy": 1.0, "called_instead": {}}


@pytest.mark.parametrize(
    "gold_arguments, predicted, exact, relaxed",
    [
        ({"raw": False}, {"raw": 0}, False, False),  # bool is not int (23 real Nexus booleans)
        ({"raw": 0}, {"raw": False}, False, False),
        ({"raw": True}, {"raw": True}, True, True),
        ({"n": 3}, {"n": 3.0}, False, True),  # a float where an int is expected: BFCL's type error
        ({"x": 3.0}, {"x": 3}, True, True),  # an int where a float is expected: BFCL promotes it
        ({"x": 3.5}, {"x": "3.5"}, False, True),  # a numeric string: relaxed only
        ({"xs": [1, 2]}, {"xs": [1.0, 2]}, False, True),  # nested values are strict too
        ({"d": {"a": None}}, {"d": {"a": None}}, True, True),
        ({"d": {"a": None}}, {"d": {"a": None, "b": 1}}, False, False),
    ],
)
def test_exact_match_is_type_strict(gold_arguments, predicted, exact, relaxed):
    verdict = judge(format_call("f", predicted), FunctionCall("f", gold_arguments))
    assert (verdict["exact_match"], verdict["relaxed_match"]) == (exact, relaxed)


def test_tuple_gold_matches_the_json_list_a_model_writes():
    assert judge(format_call("f", {"x": [1, 2]}), parse_python_call("f(x=(1, 2))"))["exact_match"]


def test_a_reply_with_more_calls_than_asked_is_not_an_exact_match():
    two = format_call("f", {"x": 1}) + " " + format_call("g", {})
    verdict = judge(two, FunctionCall("f", {"x": 1}))
    assert verdict["name_match"] and not verdict["exact_match"] and len(verdict["parsed_calls"]) == 2


def test_function_files_in_every_accepted_shape(tmp_path):
    shipped = load_schemas(REPO / "custom_function.txt")
    assert len(shipped) == 9
    for schema in shipped:
        assert schema["parameters"]["required"][0] == "apiKey" and "section" in schema["parameters"]["required"]
    plain = [shipped[0]]
    tools = [{"type": "function", "function": shipped[0]}]
    assert parse_function_text(json.dumps(plain)) == parse_function_text(json.dumps(tools)) == plain
    assert parse_function_text(json.dumps(shipped[0], indent=4)) == plain  # bare schema, no header
    api = {"name": "searchCVE", "description": "Search CVEs", "args_dicts": [
        {"name": "cveId", "type": "str", "description": "id", "required": False, "default": "None"},
        {"name": "limit", "type": "int", "description": "max", "required": True, "default": None}]}
    schema = schema_from_api_entry(api)
    assert schema["parameters"]["properties"]["limit"]["type"] == "integer"
    assert schema["parameters"]["required"] == ["limit"]
    assert parse_function_text(json.dumps(api) + "\n" + json.dumps(api)) == [schema, schema]  # JSONL
    with pytest.raises(UserError):
        parse_function_text('{"name": "broken", ')


def test_eval_items_from_each_shape():
    functions = [schema_from_api_entry({"name": "searchCPE", "args_dicts": []}),
                 schema_from_api_entry({"name": "emailrep_post", "args_dicts": []})]
    io_rows = [{"Input": "Find CPEs for PHP", "Output": "r = nvdlib.searchCPE(keywordSearch='PHP')"}]
    (item,), _ = eval_items(io_rows, functions)
    assert item.gold == FunctionCall("searchCPE", {"keywordSearch": "PHP"})
    assert item.prompt.endswith("USER: Find CPEs for PHP\n\n\nASSISTANT:") and '"name": "emailrep_post"' in item.prompt
    std = [{"prompt": "Report a@b.c", "python_function_name": "emailrep_post",
            "python_args_dict": '{"email": "a@b.c"}', "context_functions": ["emailrep_post"]}]
    (item,), _ = eval_items(std, functions)
    assert item.gold.arguments == {"email": "a@b.c"} and '"searchCPE"' not in item.system
    raw = [{"dataset": "x", "query_dict": json.dumps({"query": "q", "reference": "unknown_fn(a=1)"})}]
    assert eval_items(raw, functions) == ([], [(0, "gold function 'unknown_fn' is not among the functions given")])
    toolllm = [{"dataset": "toolllm", "query_dict": json.dumps(
        {"Input": "CPEs for PHP", "Output": "searchCPE(keywordSearch='PHP')", "Category": "x"})}]
    (item,), _ = eval_items(toolllm, functions)
    assert (item.query, item.gold) == ("CPEs for PHP", FunctionCall("searchCPE", {"keywordSearch": "PHP"}))
    odd = [{"dataset": "y", "query_dict": json.dumps({"question": "q", "answer": "a"})},
           {"dataset": "z", "query_dict": json.dumps({"query": "q", "reference": "searchCPE("})}]
    items, skipped = eval_items(odd, functions)
    assert not items
    assert skipped[0] == (0, "unsupported shape: query_dict holds ['answer', 'question'] (dataset y)")
    assert skipped[1][1].startswith("unreadable reference: not Python")
    with pytest.raises(UserError, match="give --functions"):
        eval_items(io_rows, None)


def test_glaive_rows_with_parallel_calls_are_left_to_bfcl_parallel_scoring():
    """A held-out row whose first call turn holds two calls has no single gold call: reported as skipped."""
    from fcmistral.prompt import Turn, build_system_prompt, call_turn, render_chat

    schema = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    turns = [Turn("user", "f of 1 and of 2"), call_turn([FunctionCall("f", {"x": 1}), FunctionCall("f", {"x": 2})])]
    single = [Turn("user", "f of 1"), call_turn([FunctionCall("f", {"x": 1})])]
    rows = [{"system": build_system_prompt([schema]), "chat": render_chat(t)} for t in (turns, single)]
    items, skipped = eval_items(rows, None)
    assert [i.gold for i in items] == [FunctionCall("f", {"x": 1})] and skipped == [(0, "parallel calls")]


def test_a_glaive_row_that_declines_is_scored_on_calling_nothing():
    """A held-out row offering functions whose assistant declines is an item with no gold call: right
    when the reply calls nothing (a broken call is a call), counted apart from the call items."""
    from fcmistral.prompt import SYSTEM_NO_FUNCTIONS, Turn, build_system_prompt, call_turn, render_chat

    schema = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    declining = [Turn("user", "Order a pizza"), Turn("assistant", "I'm sorry, I can't order a pizza.")]
    calling = [Turn("user", "f of 1"), call_turn([FunctionCall("f", {"x": 1})])]
    rows = [{"system": build_system_prompt([schema]), "chat": render_chat(t)} for t in (declining, calling)]
    rows.append({"system": SYSTEM_NO_FUNCTIONS, "chat": render_chat(declining)})  # chit-chat: nothing to judge
    items, skipped = eval_items(rows, None)
    assert [(i.query, i.gold) for i in items] == [("Order a pizza", None), ("f of 1", FunctionCall("f", {"x": 1}))]
    assert items[0].turns == declining[:1] and skipped == [(2, "no function offered")]
    assert items[0].record_fields()["gold_call"] is None

    def scored(output: str, item) -> dict:
        return {**item.record_fields(), **judge(output, item.gold)}

    right_call = format_call("f", {"x": 1})
    records = [scored("I can't do that.", items[0]), scored(right_call, items[0]),
               scored('<functioncall> {"name": "f", "argu', items[0]), scored(right_call, items[1])]
    assert [r["exact_match"] for r in records] == [True, False, False, True]
    summary = summarize(records)
    assert summary["n"] == 1 and summary["exact_match"] == 1.0  # the call items' figures alone
    assert summary["declines"] == {"n": 3, "accuracy": pytest.approx(1 / 3)}
    assert "33.3% of 3 made no call" in summary_markdown(summary)


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    return run_script("evaluate.py", *args)


@pytest.mark.slow
def test_evaluate_end_to_end_with_resume_and_rescoring(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    common = ["--model_path", str(tiny_model_dir), "--dataset", str(REPO / "data" / "sample_heldout.jsonl"),
              "--output_dir", str(out), "--max_new_tokens", "12", "--batch_size", "3"]
    first = run_evaluate(*common, "--limit", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3
    with open(out / "predictions.jsonl", "a") as f:  # a run killed while writing its 4th record
        f.write(lines[0][: len(lines[0]) // 2])
    second = run_evaluate(*common, "--limit", "5", "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "dropped a partial record" in second.stderr
    new_lines = (out / "predictions.jsonl").read_text().splitlines()
    assert new_lines[:3] == lines and len(new_lines) == 5
    assert all(json.loads(line)["query_id"] for line in new_lines)  # every line readable
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] + summary["declines"]["n"] == 5 and summary["declines"]["n"] == 1  # the 2nd row declines
    assert "| queries |" in (out / "summary.md").read_text()
    first_record = json.loads(new_lines[0])
    assert {"query_id", "query", "output", "parsed_calls", "gold_call", "exact_match"} <= first_record.keys()

    # Re-scoring needs no model; a duplicated line (a resumed run) counts once.
    with open(out / "predictions.jsonl", "a") as f:
        f.write(new_lines[0] + "\n")
    rescored = run_evaluate("--predictions", str(out / "predictions.jsonl"))
    assert rescored.returncode == 0 and json.loads((out / "summary.json").read_text())["n"] == 4


def test_evaluate_refuses_bad_input(tmp_path):
    missing = run_evaluate("--predictions", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    no_model = run_evaluate("--dataset", "data/sample_heldout.jsonl")
    assert no_model.returncode == 2 and "--model_path" in no_model.stderr


def test_vllm_backend_wiring(monkeypatch, tmp_path):
    """The wiring of evaluate.py's vLLM backend, with a stand-in at vLLM's API (vLLM runs no model
    without a GPU; its own classes take these parameters in tests/serving/vllm_checks.py)."""
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "evaluate.py")  # not PyPI's `evaluate`
    evaluate_script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "evaluate_script", evaluate_script)  # dataclasses look their module up
    spec.loader.exec_module(evaluate_script)

    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            calls["params"] = kwargs

    class LLM:
        def __init__(self, model):
            calls["model"] = model

        def generate(self, prompts, params):
            calls["prompts"] = prompts
            out = types.SimpleNamespace(outputs=[types.SimpleNamespace(text=" <functioncall> {} <|endoftext|>\n\n\nUSER:")])
            return [out for _ in prompts]

    class StructuredOutputsParams:
        def __init__(self, structural_tag):
            self.structural_tag = structural_tag

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setitem(sys.modules, "vllm.sampling_params",
                        types.SimpleNamespace(StructuredOutputsParams=StructuredOutputsParams))
    monkeypatch.setattr("fcmistral.generation.vllm_usable", lambda: True)
    args = evaluate_script.EvalArguments(max_new_tokens=400)
    generate = evaluate_script.make_generator(args, ModelArguments(model_path="merged"))  # auto: vLLM, no adapter
    grammar = CallConstraint('{"type": "structural_tag"}')
    assert generate(["p1", "p2"], [None, grammar]) == [" <functioncall> {}", " <functioncall> {}"]  # cut at the end
    assert calls["model"] == "merged" and calls["prompts"] == ["p1", "p2"]
    assert calls["params"] == {"temperature": 0.0, "max_tokens": 400, "stop": ["<|endoftext|>"],
                               "include_stop_str_in_output": False, "structured_outputs": calls["params"]["structured_outputs"]}
    assert calls["params"]["structured_outputs"].structural_tag == grammar.grammar  # (the last prompt's)
    calls.clear()  # a bias of zero, however written, leaves vLLM usable (auto picked hf for "0.0" once)
    evaluate_script.make_generator(evaluate_script.EvalArguments(call_bias="0.0,-0"), ModelArguments(model_path="m2"))
    assert calls["model"] == "m2"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(UserError, match="merged model"):
        evaluate_script.make_generator(evaluate_script.EvalArguments(backend="vllm"),
                                       ModelArguments(model_path="b", adapter_path=str(adapter)))
    with pytest.raises(UserError, match="--repetition_penalty needs --backend hf"):
        evaluate_script.make_generator(evaluate_script.EvalArguments(backend="vllm", repetition_penalty=1.2),
                                       ModelArguments(model_path="m"))
    with pytest.raises(UserError, match="--loop_penalty needs --backend hf"):
        evaluate_script.make_generator(evaluate_script.EvalArguments(backend="vllm", loop_penalty=0.8),
                                       ModelArguments(model_path="m"))
    monkeypatch.setattr("fcmistral.generation.vllm_usable", lambda: False)
    with pytest.raises(UserError, match="needs vLLM installed and a GPU"):
        evaluate_script.make_generator(evaluate_script.EvalArguments(backend="vllm"), ModelArguments(model_path="m"))


@pytest.mark.slow
def test_evaluate_real_nexus_rows_from_a_local_file(tiny_model_dir, tmp_path):
    data = SHARED_DATA / "nexus_raw_queries_cve_cpe_emailrep.jsonl"
    if not data.exists():
        pytest.skip("../shared/data is not beside this checkout")
    functions = tmp_path / "api_list.jsonl"  # standardized_api_list-style rows, converted on load
    functions.write_text("".join(json.dumps({"name": name, "description": name, "args_dicts": [
        {"name": "keywordSearch", "type": "str", "description": "keywords", "required": False, "default": None}]}) + "\n"
        for name in ("searchCPE", "searchCVE", "emailrep_post", "emailrep_report")))
    out = tmp_path / "nexus"
    result = run_evaluate("--model_path", str(tiny_model_dir), "--dataset", str(data), "--functions", str(functions),
                          "--output_dir", str(out), "--limit", "4", "--max_new_tokens", "4", "--batch_size", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and records[0]["gold_call"]["name"] == "searchCPE"
    assert json.loads((out / "summary.json").read_text())["n"] == 4


def test_evaluate_call_bias_table_and_constrained_calls(tiny_model_dir, tmp_path):
    """Each --call_bias value is generated into its own folder and set side by side in call_bias.md;
    the bias decides the reply's first token (the call marker's, or never it)."""
    pytest.importorskip("xgrammar", reason="xgrammar is not installed")
    out = tmp_path / "eval"
    result = run_evaluate("--model_path", str(tiny_model_dir), "--dataset", str(REPO / "data" / "sample_heldout.jsonl"),
                          "--output_dir", str(out), "--max_new_tokens", "6", "--limit", "3", "--constrained_calls",
                          "--call_bias=-100,100")
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out / "call_bias.md").read_text()
    assert "| -100 |" in table and "| +100 |" in table and table in result.stdout
    outputs = {bias: [json.loads(line)["output"] for line in (out / f"call_bias_{bias}" / "predictions.jsonl").open()]
               for bias in ("-100", "+100")}
    assert len(outputs["+100"]) == 3 and all(o.startswith("<") for o in outputs["+100"])  # (turns are stripped)
    assert not any(o.startswith("<") for o in outputs["-100"])
    bad = run_evaluate("--model_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "x"), "--call_bias", "1,x")
    assert bad.returncode == 2 and "--call_bias takes numbers" in bad.stderr
