"""The Modelfile's TEMPLATE executed by Go's own text/template (tests/export/ollama_render, a small Go
program over the data Ollama gives a template) on all 660 sample conversations: it writes prompt.py's
format for what Ollama shows it. Ollama shows a template its own view of a request (see main.go):
schemas reduced to its typed fields (required before properties, top-level properties and call
arguments with sorted keys, a description always there), compact JSON; those differences are
expected here and said in docs/interop.md. Skips where Go is absent (CI installs golang-go)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from fcmistral.export.ollama import modelfile, template
from fcmistral.format.glaive import GlaiveRow, parse_row
from fcmistral.prompt import (
    ASSISTANT_TAG,
    CALL_SEPARATOR,
    FUNCTION_CALL_MARKER,
    SYSTEM_WITH_FUNCTIONS,
    TURN_SEPARATOR,
    FunctionCall,
    Turn,
    build_system_prompt,
    call_turn,
    format_call,
    render_chat,
)
from tests.conftest import REPO, read_jsonl

HARNESS = REPO / "tests" / "export" / "ollama_render"
PROPERTY_FIELDS = ("anyOf", "type", "items", "description", "enum", "properties", "required")


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Renders a template for a list of /api/chat bodies with Go's text/template (built once)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (apt-get install golang-go): the template is executed by Go's text/template")
    folder = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "path"), "GOFLAGS": "-mod=mod",
           "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    binary = folder / "ollama_render"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=HARNESS, env=env, check=True, timeout=600)

    def render(source: str, requests: list[dict]) -> list[str]:
        result = subprocess.run([str(binary)], input=json.dumps({"template": source, "requests": requests}),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    return render


def go_value(value):
    """``value`` as Go's json.Marshal writes what json.Unmarshal read into ``any``: objects are maps
    (sorted keys), every number a float64 (10.0 is 10)."""
    if isinstance(value, dict):
        return {k: go_value(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [go_value(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def go_json(value) -> str:
    """Go's json.Marshal: compact, <, > and & and the line/paragraph separators escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def ollama_property(schema: dict) -> dict:
    """A property as Ollama's ToolProperty keeps it (its fields, in its order, empty ones left out)."""
    kept = {}
    for field in PROPERTY_FIELDS:
        value = schema.get(field)
        if field == "properties" and isinstance(value, dict):
            kept[field] = {k: ollama_property(v) for k, v in value.items()}  # nested: order kept
        elif field == "anyOf" and value:
            kept[field] = [ollama_property(v) for v in value]
        elif field in ("items",) and value is not None:
            kept[field] = go_value(value)
        elif value not in (None, "", [], ()):
            kept[field] = go_value(value) if field == "enum" else value
    return kept


def ollama_function(function: dict) -> dict:
    """What ``{{ json .Function }}`` writes for a tool (Ollama's typed view of it)."""
    parameters = function.get("parameters") or {}
    view = {"type": parameters.get("type", "")}
    for field in ("$defs", "items"):
        if parameters.get(field) is not None:
            view[field] = go_value(parameters[field])
    if parameters.get("required"):
        view["required"] = parameters["required"]
    properties = parameters.get("properties")
    view["properties"] = None if properties is None else {k: ollama_property(properties[k]) for k in sorted(properties)}
    return {"name": function["name"], "description": function.get("description", ""), "parameters": view}


def chat_request(row) -> dict:
    """A conversation as a client sends it to /api/chat: an assistant's text and the call after it
    are one message (Ollama merges consecutive messages of a role, keeping the first one's calls)."""
    messages: list[dict] = []
    for turn in row.turns:
        if turn.role == "function_call":
            calls = [{"function": {"name": call.name, "arguments": call.arguments}} for call in turn.calls]
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"] = calls
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        else:
            messages.append({"role": {"function_response": "tool"}.get(turn.role, turn.role), "content": turn.content})
    return {"messages": messages, "tools": [{"type": "function", "function": f} for f in row.functions]}


def expected_render(row) -> str:
    """prompt.py's text for the row, with the schemas and arguments as Ollama shows them."""
    if row.functions:
        separator = "\n" if len(row.functions) == 1 else "\n\n"
        system = SYSTEM_WITH_FUNCTIONS + "".join(go_json(ollama_function(f)) + separator for f in row.functions)
    else:
        system = build_system_prompt([])
    turns = [Turn("function_call", CALL_SEPARATOR.join(
                 format_call(c.name, {}).replace("'{}'", f"'{go_json(go_value(c.arguments))}'") for c in t.calls))
             if t.role == "function_call" else t for t in row.turns]
    return system + render_chat(turns) + ASSISTANT_TAG


def sample_rows():
    return [parse_row(r) for name in ("sample_train.jsonl", "sample_heldout.jsonl")
            for r in read_jsonl(REPO / "data" / name)]


def test_go_renders_the_template_as_prompt_py_writes_the_format(go_render):
    rows = sample_rows()
    assert len(rows) == 660 and any(len(r.functions) > 1 for r in rows)
    renders = go_render(template(), [chat_request(r) for r in rows])
    for row, rendered in zip(rows, renders):
        assert rendered == expected_render(row)


def test_parallel_calls_render_as_one_turn(go_render):
    """Two tool_calls in one message: one assistant turn, a call per line, then a response per call."""
    weather = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    calls = [FunctionCall("get_weather", {"city": "Paris"}), FunctionCall("get_weather", {"city": "Zoë's"})]
    row = GlaiveRow(build_system_prompt([weather]), [weather],
                    [Turn("user", "Paris and Zoë's town?"), call_turn(calls), Turn("function_response", '{"t": 1}'),
                     Turn("function_response", '{"t": 2}')], TURN_SEPARATOR, TURN_SEPARATOR)
    (rendered,) = go_render(template(), [chat_request(row)])
    assert rendered == expected_render(row) and rendered.count(FUNCTION_CALL_MARKER) == 2
    assert "'}\n<functioncall>" in rendered and rendered.count(" <|endoftext|>") == 1


def test_a_template_changed_by_one_character_fails(go_render):
    rows = sample_rows()[:40]
    source = template()
    broken = source.replace("ASSISTANT", "ASSISTAN", 1)
    assert broken != source
    renders = go_render(broken, [chat_request(r) for r in rows])
    assert any(rendered != expected_render(row) for row, rendered in zip(rows, renders))


def test_ollama_merges_an_assistant_text_and_a_call_sent_apart(go_render):
    """Sent as two assistant messages, Ollama merges them and the call is lost: clients must send the
    text and the call in one message (as the OpenAI API shapes it), which the template renders as two turns."""
    weather = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    apart = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Let me check."},
                          {"role": "assistant", "content": "", "tool_calls": [call]}],
             "tools": [{"type": "function", "function": weather}]}
    together = {**apart, "messages": [apart["messages"][0], {"role": "assistant", "content": "Let me check.",
                                                              "tool_calls": [call]}]}
    split, merged = go_render(template(), [apart, together])
    assert "<functioncall>" not in split
    assert merged.endswith("ASSISTANT: Let me check. <|endoftext|>\n\n\nASSISTANT: <functioncall> "
                           '{"name": "get_weather", "arguments": \'{"city":"Paris"}\'} <|endoftext|>\n\n\nASSISTANT:')


def test_modelfile_declares_the_file_and_the_stop():
    text = modelfile("model.gguf")
    assert text.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|endoftext|>"' in text
    assert '"""' not in template() and ".Tools" in template()  # Ollama offers tools only to templates using .Tools

