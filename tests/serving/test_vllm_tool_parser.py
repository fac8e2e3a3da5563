"""The vLLM tool-parser plugin: its streaming reader (no vLLM needed), and the plugin inside vLLM 0.33
itself, in vLLM's own environment (``make vllm-env``; tests/serving/vllm_checks.py runs there), where
a deliberately broken plugin must fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fcmistral.format.calls import parse_calls, split_reply
from fcmistral.format.streams import CallStream, partial_marker_length
from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER, format_call
from tests.conftest import REPO

PLUGIN = REPO / "fcmistral" / "serving" / "vllm_tool_parser.py"
WEATHER = format_call("get_current_weather", {"location": "Paris", "note": "it's {'quoted'}"})
TAX = format_call("calculate_tax", {"income": 50000})
REPLIES = [
    " It is sunny.",
    f" {WEATHER} {END_OF_TURN}",
    f" Let me check. {WEATHER}",
    f" {WEATHER} {TAX} {END_OF_TURN}",
    f" {WEATHER} {END_OF_TURN}\n\n\nASSISTANT: {TAX}",
    " The <function is not a call, and neither is <functioncall",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_call_stream_fed_a_character_at_a_time(reply):
    """Text and calls come out in order, each call as soon as its text is complete, and together they
    equal what the whole-reply parser reads."""
    stream, text, calls, complete_at = CallStream(), "", [], []
    for end in range(1, len(reply) + 1):
        new_text, new_calls = stream.feed(reply[:end])
        text += new_text
        calls += new_calls
        complete_at += [end] * len(new_calls)
    turn = reply.split(END_OF_TURN)[0]  # the stream reads one turn: engines stop at its end marker
    before, payloads = split_reply(turn)
    assert calls == (parse_calls(turn) if payloads else [])
    held = 0 if payloads else partial_marker_length(before, (FUNCTION_CALL_MARKER, END_OF_TURN))
    assert text == before[: len(before) - held]  # a stream never shows what may start a marker
    assert "<functioncall>" not in text and END_OF_TURN not in text
    for position, call in zip(complete_at, calls):  # each call is out by the time its own text has ended
        assert reply[:position].rstrip().endswith("'}")


VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def run_in_vllm(plugins: list[Path], tokenizer_dirs: list[Path]) -> subprocess.CompletedProcess:
    """tests/serving/vllm_checks.py in vLLM's own environment (make vllm-env)."""
    if not VLLM_PYTHON.exists():
        pytest.skip("vLLM's environment is not there: make vllm-env (make test builds it)")
    return subprocess.run([str(VLLM_PYTHON), str(REPO / "tests" / "serving" / "vllm_checks.py"),
                           "--plugins", *map(str, plugins), "--tokenizers", *map(str, tokenizer_dirs)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mistral_tokenizer_dir(tmp_path_factory) -> Path:
    pytest.importorskip("mistral_common", reason="mistral-common is not installed")
    from fcmistral.artifacts.mistral_tokenizer import build_mistral_tokenizer

    return build_mistral_tokenizer(tmp_path_factory.mktemp("mistral") / "tokenizer")


BREAKAGES = [
    ("arguments=arguments)", "arguments=arguments[:-1])"),  # a streamed call loses its last fragment
    ("request.stop = [*stops, END_OF_TURN]", "request.stop = stops"),  # no stop at the end marker
    ("supports_required_and_named = False", "supports_required_and_named = True"),  # vLLM's JSON calls forced
]


@pytest.mark.slow
def test_the_plugin_in_vllm_itself_and_broken_ones_fail(tiny_model_dir, mistral_tokenizer_dir, tmp_path):
    """Registered as --tool-parser-plugin does, driven by vLLM 0.33's own parser layer and request
    classes, with the tiny and Mistral-7B-v0.1's tokenizers (see vllm_checks.py); then the plugin
    broken three ways, each of which must fail there."""
    result = run_in_vllm([PLUGIN], [tiny_model_dir, mistral_tokenizer_dir])
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.count("ok: ") == 4 and "24 replies" in result.stdout, result.stdout
    assert result.stdout.count("ok: call grammar: 4 replies accepted") == 2, result.stdout
    source, broken = PLUGIN.read_text(), []
    for i, (old, new) in enumerate(BREAKAGES):
        assert old in source
        broken.append(tmp_path / f"broken{i}" / "vllm_tool_parser.py")
        broken[-1].parent.mkdir()
        broken[-1].write_text(source.replace(old, new))
    result = run_in_vllm(broken, [tiny_model_dir])
    assert result.returncode == 1 and result.stdout.count("failed: ") == len(BREAKAGES), result.stdout + result.stderr[-2000:]
    assert "ok: call grammar" in result.stdout  # (checked once per tokenizer, whatever the plugins)


def test_an_incomplete_call_is_not_sent():
    assert CallStream().feed(format_call("f", {})[:-1]) == ("", [])
    assert CallStream().feed(format_call("f", {}))[1] == parse_calls(format_call("f", {}))
