"""GGUF export read back by transformers' GGUF loader (an independent reader), and the Ollama
Modelfile's Go template executed by a small interpreter of the Go template subset it uses."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from fcmistral.errors import UserError
from fcmistral.export import gguf as gguf_export
from fcmistral.export.ollama import modelfile, template
from fcmistral.format.glaive import parse_row
from fcmistral.prompt import ASSISTANT_TAG, SYSTEM_WITH_FUNCTIONS, Turn, build_system_prompt, format_call, render_chat
from tests.conftest import REPO, read_jsonl, run_script

pytest.importorskip("gguf", reason="the gguf package is not installed")

TEXTS = ["USER: What's the weather like in Zürich? ☀\n\n\nASSISTANT: <functioncall> {\"name\": \"get_weather\"}",
         "FUNCTION RESPONSE: {\"temperature\": 18, \"unit\": \"celsius\"}", "Tab\tand é, 漢字 🙂"]


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
@pytest.mark.parametrize("outtype, tolerance", [("f32", 1e-5), ("f16", 1e-2), ("bf16", 5e-2), ("q8_0", 1e-1)])
def test_gguf_reads_back_with_the_same_logits_and_tokens(tiny_model_dir, tmp_path, outtype, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_export.export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", outtype)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    again_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS:  # the reader adds no BOS for a byte-level vocabulary; llama.cpp follows add_bos_token
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert again_tokenizer(text, add_special_tokens=False).input_ids == ids
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    reference = logits(model, ids)
    difference = (logits(again, ids) - reference).abs().max().item()
    assert difference <= tolerance * reference.abs().max().item()
    assert again_tokenizer.chat_template == tokenizer.chat_template


@pytest.mark.slow
def test_without_the_qk_permutation_the_logits_differ(tiny_model_dir, tmp_path, monkeypatch):
    """The round trip above is exact only because the file holds llama.cpp's q/k layout, which the
    reader undoes: written without it, the model computes something else."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(gguf_export, "permute", lambda weights, *heads: weights)
    path = gguf_export.export_gguf(tiny_model_dir, tmp_path / "plain.gguf", "f32")
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(TEXTS[0], return_tensors="pt").input_ids
    reference = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), ids)
    wrong = logits(AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32), ids)
    assert (wrong - reference).abs().max().item() > 1e-3


def test_sentencepiece_vocabulary_is_written_as_llama_type(mistral_tokenizer, tiny_model_dir, tmp_path):
    """Mistral's real tokenizer: every piece in id order, bytes typed BYTE, <s> </s> CONTROL, <unk>
    UNKNOWN, scores in merge order (llama.cpp's SPM tokenizer merges by score)."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size = len(mistral_tokenizer)
    folder = tmp_path / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    mistral_tokenizer.save_pretrained(folder)
    reader = gguf.GGUFReader(gguf_export.export_gguf(folder, tmp_path / "m.gguf", "f16"))

    def field(name):
        f = reader.fields[name]
        return [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()

    vocab = mistral_tokenizer.get_vocab()
    assert field("tokenizer.ggml.model") == "llama"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 32000 and all(vocab[t] == i for i, t in enumerate(tokens))
    types = field("tokenizer.ggml.token_type")
    assert types[:3] == [2, 3, 3] and types.count(6) == 256 and tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    scores = np.array(field("tokenizer.ggml.scores"))
    assert scores[vocab["▁t"]] > scores[vocab["▁the"]] > scores[vocab["▁there"]]  # built from earlier merges
    assert field("tokenizer.ggml.bos_token_id") == 1 and field("tokenizer.ggml.add_bos_token") is True


def test_export_refuses_what_it_should(tmp_path, tiny_model_dir):
    (tmp_path / "taken.gguf").write_text("keep me")
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        gguf_export.export_gguf(tiny_model_dir, tmp_path / "taken.gguf")
    assert (tmp_path / "taken.gguf").read_text() == "keep me"
    with pytest.raises(UserError, match="not a model folder"):
        gguf_export.export_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "Modelfile").write_text("mine")
    result = run_script("fcmistral/export/gguf.py", "--model_path", str(tiny_model_dir), "--output",
                        str(tmp_path / "new.gguf"))  # the Modelfile beside it would be replaced
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Modelfile' exists" in result.stderr
    assert not (tmp_path / "new.gguf").exists() and (tmp_path / "Modelfile").read_text() == "mine"


# --- the Ollama template -------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)


class GoTemplate:
    """Go's text/template, the subset the Modelfile uses: string literals, fields, ``json``, ``len``,
    ``eq``, ``if``/``else if``/``else``, ``range`` (with ``$i, $x :=``), ``end``; ``{{-`` trims the
    template text before it. ``json`` marshals as Go does: compact, with <, > and & escaped."""

    def __init__(self, source: str) -> None:
        self.nodes, rest = self._parse(self._tokens(source), 0)
        assert rest is None

    @staticmethod
    def _tokens(source: str) -> list[tuple[str, str]]:
        tokens, position = [], 0
        for match in _ACTION.finditer(source):
            text = source[position:match.start()]
            if match.group(0).startswith("{{-"):
                text = text.rstrip()
            tokens.append(("text", text))
            tokens.append(("action", match.group(1)))
            position = match.end()
        tokens.append(("text", source[position:]))
        return tokens

    def _parse(self, tokens, i, stop=("end",)):
        nodes = []
        while i < len(tokens):
            kind, value = tokens[i]
            if kind == "text":
                nodes.append(("text", value))
                i += 1
                continue
            word = value.split(" ", 1)[0]
            if word in ("end", "else"):
                return nodes, i
            if word in ("if", "range"):
                body, i = self._parse(tokens, i + 1)
                other = []
                if tokens[i][1].startswith("else if"):
                    tokens[i] = ("action", tokens[i][1][5:])  # parse "if ..." as the else branch
                    nested, i = self._parse(tokens, i, stop)
                    other, i = nested, i
                    nodes.append((word, value[len(word) + 1:], body, other))
                    continue
                if tokens[i][1] == "else":
                    other, i = self._parse(tokens, i + 1)
                nodes.append((word, value[len(word) + 1:], body, other))
                i += 1
                continue
            nodes.append(("expr", value))
            i += 1
        return nodes, None

    def render(self, data: dict) -> str:
        return self._run(self.nodes, data, {"$": data})

    def _run(self, nodes, dot, variables) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                value = self._eval(node[1], dot, variables)
                out.append(value if isinstance(value, str) else json.dumps(value))
            elif node[0] == "if":
                out.append(self._run(node[2] if self._eval(node[1], dot, variables) else node[3], dot, variables))
            else:  # range
                head = node[1]
                names, _, head = head.rpartition(":=") if ":=" in head else ("", "", head)
                items = self._eval(head.strip(), dot, variables) or []
                for index, item in enumerate(items):
                    scope = dict(variables)
                    if names:
                        index_name, item_name = [n.strip() for n in names.split(",")]
                        scope.update({index_name: index, item_name: item})
                    out.append(self._run(node[2], item, scope))
        return "".join(out)

    def _eval(self, expression: str, dot, variables):
        expression = expression.strip()
        if expression.startswith("(") and expression.endswith(")"):
            return self._eval(expression[1:-1], dot, variables)
        if expression.startswith('"'):
            return json.loads(expression)
        parts = re.findall(r'\(.*?\)|"(?:[^"\\]|\\.)*"|\S+', expression)
        if len(parts) > 1:
            function, arguments = parts[0], [self._eval(p, dot, variables) for p in parts[1:]]
            if function == "json":
                return json.dumps(arguments[0], ensure_ascii=False, separators=(",", ":")).replace(
                    "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            if function == "eq":
                return arguments[0] == arguments[1]
            if function == "len":
                return len(arguments[0])
            raise AssertionError(f"unsupported function {function}")
        if expression.isdigit():
            return int(expression)
        if expression.startswith("$"):
            name, _, path = expression.partition(".")
            value = variables[name]
        else:
            value, path = dot, expression[1:]
        for key in filter(None, path.split(".")):
            value = value.get(key) if isinstance(value, dict) else None
        return value


def ollama_request(row) -> dict:
    """What Ollama passes the template for a conversation: its tools and messages."""
    messages = []
    for turn in row.turns:
        if turn.role == "function_call":
            messages.append({"Role": "assistant", "Content": "", "ToolCalls": [
                {"Function": {"Name": turn.call.name, "Arguments": turn.call.arguments}}]})
        else:
            messages.append({"Role": {"function_response": "tool"}.get(turn.role, turn.role), "Content": turn.content})
    return {"Tools": [{"Function": f} for f in row.functions], "Messages": messages}


def go_json(value) -> str:
    return GoTemplate("{{ json . }}").render(value)


def ollama_turn(turn: Turn) -> Turn:
    """A call turn as the template writes it: the arguments as Go's compact JSON."""
    if turn.role != "function_call":
        return turn
    return Turn("function_call", format_call(turn.call.name, {}).replace("'{}'", f"'{go_json(turn.call.arguments)}'"))


def test_modelfile_template_renders_the_glaive_format():
    """Each sample conversation renders as prompt.py renders it (then the generation prompt), except
    that schemas and call arguments are Go's compact JSON, which is what Ollama's json function writes."""
    go = GoTemplate(template())
    files = ("sample_train.jsonl", "sample_heldout.jsonl")
    rows = [parse_row(r) for name in files for r in read_jsonl(REPO / "data" / name)]
    for row in rows:
        schemas = "".join(go_json(f) + ("\n" if len(row.functions) == 1 else "\n\n") for f in row.functions)
        system = SYSTEM_WITH_FUNCTIONS + schemas if row.functions else build_system_prompt([])
        expected = system + render_chat([ollama_turn(t) for t in row.turns]) + ASSISTANT_TAG
        assert go.render(ollama_request(row)) == expected
    assert len(rows) == 660


def test_modelfile_declares_the_file_and_the_stop():
    text = modelfile("model.gguf")
    assert text.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|endoftext|>"' in text
    assert '"""' not in template() and ".Tools" in template()  # Ollama offers tools only to templates using .Tools
