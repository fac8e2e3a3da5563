"""An Ollama Modelfile for an exported GGUF: the glaive format as a Go template, from prompt.py.

    ollama create fcmistral -f outputs/Modelfile && ollama run fcmistral

Ollama renders ``TEMPLATE`` with Go's text/template over ``.Tools`` (each ``.Function`` with its
name, description and parameters) and ``.Messages`` (``.Role``, ``.Content``, ``.ToolCalls``). The
template writes what prompt.py writes, with one difference Ollama imposes: its ``json`` function
writes compact JSON, so the function schemas in the SYSTEM text are not indented as in training
(the model still reads them; the glaive data itself mixes layouts). ``<|endoftext|>`` is a stop.
"""

from __future__ import annotations

import json
from pathlib import Path

from fcmistral.errors import UserError
from fcmistral.prompt import (
    ASSISTANT_TAG,
    CALL_SEPARATOR,
    END_OF_TURN,
    FUNCTION_CALL_MARKER,
    FUNCTION_RESPONSE_TAG,
    SYSTEM_NO_FUNCTIONS,
    SYSTEM_WITH_FUNCTIONS,
    TURN_SEPARATOR,
    USER_TAG,
)


def _go(text: str) -> str:
    """``text`` as a Go template string literal action (so newlines and quotes need no care)."""
    return "{{ " + json.dumps(text) + " }}"


def template() -> str:
    """The Go template (one line of actions: no stray whitespace reaches the prompt)."""
    sep, end = _go(TURN_SEPARATOR), _go(" " + END_OF_TURN)
    return "".join([
        "{{- if .Tools }}", _go(SYSTEM_WITH_FUNCTIONS),
        "{{- range $i, $tool := .Tools }}{{ json $tool.Function }}",
        "{{- if eq (len $.Tools) 1 }}", _go("\n"), "{{- else }}", _go("\n\n"), "{{- end }}{{- end }}",
        "{{- else }}", _go(SYSTEM_NO_FUNCTIONS), "{{- end }}",
        "{{- range .Messages }}",
        "{{- if eq .Role \"user\" }}", _go(USER_TAG + " "), "{{ .Content }}", sep,
        "{{- else if eq .Role \"tool\" }}", _go(FUNCTION_RESPONSE_TAG + " "), "{{ .Content }}", sep,
        "{{- else if eq .Role \"assistant\" }}",
        "{{- if .Content }}", _go(ASSISTANT_TAG + " "), "{{ .Content }}", end, sep, "{{- end }}",
        # Its calls: one turn, CALL_SEPARATOR between them (fcmistral.prompt.format_calls).
        "{{- if .ToolCalls }}", _go(ASSISTANT_TAG + " "),
        "{{- range $j, $call := .ToolCalls }}{{- if $j }}", _go(CALL_SEPARATOR), "{{- end }}",
        _go(FUNCTION_CALL_MARKER + ' {"name": "'), "{{ .Function.Name }}", _go('", "arguments": \''),
        "{{ json .Function.Arguments }}", _go("'}"), "{{- end }}", end, sep,
        "{{- end }}",
        "{{- end }}",
        "{{- end }}",
        _go(ASSISTANT_TAG),
    ])


def modelfile(gguf_name: str) -> str:
    return (f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{template()}"""\n'
            f"PARAMETER stop {json.dumps(END_OF_TURN)}\n"
            "PARAMETER temperature 0\n")


def write_modelfile(gguf_path: str | Path, overwrite: bool = False) -> Path:
    """Write ``Modelfile`` beside the GGUF file (never over an existing one unless asked)."""
    path = Path(gguf_path).with_name("Modelfile")
    if path.exists() and not overwrite:
        raise UserError(f"{str(path)!r} exists; pass --overwrite to replace it")
    path.write_text(modelfile(Path(gguf_path).name), encoding="utf-8")
    return path
