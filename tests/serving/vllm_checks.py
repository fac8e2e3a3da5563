"""The glaive tool-parser plugin inside vLLM 0.33 itself, run with the Python of vLLM's own
environment (``make vllm-env``: vLLM's declared versions, see the Makefile), not this project's:

    .venv-vllm/bin/python tests/serving/vllm_checks.py --plugins PLUGIN [...] --tokenizers DIR [...]

The plugin is registered as ``--tool-parser-plugin`` does (``ToolParserManager.import_tool_parser``),
composed by vLLM's ``ParserManager`` into the ``DelegatingParser`` its chat server holds per request,
and driven through the calls that server makes: ``adjust_request``, then ``parse`` for a whole reply,
or ``parse_delta`` per detokenized token for a streamed one, with vLLM's ``ChatCompletionRequest``
and each tokenizer loaded by vLLM's ``get_tokenizer``. For every reply and ``tool_choice``: the
streamed content and calls (names and argument fragments put together) equal the whole reply's, and
those equal what the project's own parser reads. Prints a line per plugin and tokenizer ("ok" or
"failed", with the assertion); exits 1 if any failed. Several plugins are checked one after the
other in one process (each registers the name "glaive" anew), to import vLLM once.
The repository is put on ``sys.path``: the plugin needs only fcmistral's pure-Python format modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest  # noqa: E402
from vllm.parser.parser_manager import ParserManager  # noqa: E402
from vllm.tokenizers import get_tokenizer  # noqa: E402
from vllm.tool_parsers import ToolParserManager  # noqa: E402

from fcmistral.format.calls import split_reply, try_parse_calls  # noqa: E402
from fcmistral.format.streams import partial_marker_length  # noqa: E402
from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER, FunctionCall, format_call, format_calls  # noqa: E402

WEATHER = format_call("get_current_weather", {"location": "Zoë's \"flat\", Paris", "note": "it's {'quoted'} \\ ok"})
TAX = format_call("calculate_tax", {"income": 50000, "rates": [0.1, 0.2], "nested": {"a": None}})
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("get_current_weather", "calculate_tax")]
REPLIES = [  # what the model writes (vLLM has cut it at the <|endoftext|> stop string)
    " It is sunny.",
    f" {WEATHER}",
    f" Let me check. {WEATHER}",
    f" {WEATHER} {TAX}",
    f" {format_calls([FunctionCall('calculate_tax', {'income': 1}), FunctionCall('calculate_tax', {'income': 2})])}",  # parallel
    f" {WEATHER}\n\n\nASSISTANT: {TAX}",
    " The <function is not a call, and neither is <functioncall",
    ' <functioncall> {"name": "x", "arguments": \'{"a',  # cut short: text
]
CHOICES = ["auto", "required", {"type": "function", "function": {"name": "get_current_weather"}}]


def expected(reply: str) -> tuple[str | None, list[tuple[str, str]]]:
    """The project's own reading: content and (name, arguments) of each call."""
    calls, error = try_parse_calls(reply)
    if error:  # no call, or one that cannot be read: the reply is text
        return reply, []
    before, _ = split_reply(reply)
    return before.strip() or None, [(c.name, json.dumps(c.arguments, ensure_ascii=False)) for c in calls]


def streamed(parser, request, tokenizer, reply: str) -> tuple[str, list[tuple[str, str]]]:
    """The reply fed to ``parse_delta`` as vLLM's server does: the text of each new token (a token
    that ends inside a character waits for the next), ``finished`` on the last."""
    ids = tokenizer.encode(reply, add_special_tokens=False)
    content, calls, shown = "", {}, ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1])
        last = i == len(ids) - 1
        if text.endswith("\ufffd") and not last:
            continue
        delta = parser.parse_delta(text[len(shown):], ids[i : i + 1], request, [1, 2, 3], finished=last)
        shown = text
        if delta is None:
            continue
        content += delta.content or ""
        for call in delta.tool_calls:
            entry = calls.setdefault(call.index, ["", ""])
            if call.function is not None:
                entry[0] += call.function.name or ""
                entry[1] += call.function.arguments or ""
    return content, [tuple(calls[i]) for i in sorted(calls)]


def check(tokenizer_dir: str) -> int:
    tokenizer = get_tokenizer(tokenizer_dir)
    parser_class = ParserManager.get_parser(tool_parser_name="glaive", enable_auto_tools=True, tokenizer=tokenizer)
    checked = 0
    for choice in CHOICES:
        for reply in REPLIES:
            request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                            tool_choice=choice, stop=["STOP"])
            parser = parser_class(tokenizer, request.tools)
            request = parser.adjust_request(request)
            assert request.stop == ["STOP", END_OF_TURN], request.stop
            assert request.structured_outputs is None, "vLLM would force its JSON call format on the model"
            content, calls = expected(reply)
            _, whole_content, whole_calls = parser.parse(reply, request, enable_auto_tools=True)
            got = [(c.name, c.arguments) for c in whole_calls or []]
            assert (whole_content, got) == (content, calls), (choice, reply, whole_content, got)
            stream_content, stream_calls = streamed(parser_class(tokenizer, request.tools), request, tokenizer,
                                                    reply)
            # Streamed, text that may still start a call marker is held back, and a call is sent once
            # complete: a reply that ends inside a marker, or inside a call that never completes (cut
            # by max_tokens), loses that tail. vLLM calls a tool parser at no end of stream, so it
            # cannot be released; vLLM's own legacy parsers (hermes) do the same.
            before, payloads = split_reply(reply)
            before = before if payloads else reply
            held = 0 if payloads else partial_marker_length(before, (FUNCTION_CALL_MARKER, END_OF_TURN))
            assert stream_content.strip() == before[: len(before) - held].strip(), (choice, reply, stream_content)
            assert stream_calls == calls, (choice, reply, stream_calls)
            checked += 1
    return checked


def check_call_grammar(tokenizer_dir: str) -> int:
    """The call grammar (fcmistral.format.grammar) as evaluate.py hands it to vLLM: vLLM's
    ``SamplingParams`` take it as a structural tag, and the xgrammar of vLLM's environment (its
    structured-output backend) compiles it for the tokenizer and accepts the tokens of valid calls.
    Returns the number of replies accepted."""
    import xgrammar
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    from fcmistral.format.grammar import call_grammar

    tokenizer = get_tokenizer(tokenizer_dir)
    functions = [{"name": "get_current_weather", "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "note": {"type": "string"}}, "required": ["location"]}},
                 {"name": "calculate_tax", "parameters": {"type": "object"}}]
    tag = call_grammar(functions, "auto")
    SamplingParams(temperature=0.0, max_tokens=16, stop=[END_OF_TURN],
                   structured_outputs=StructuredOutputsParams(structural_tag=tag))
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer))
    compiled = compiler.compile_structural_tag(tag)
    prompt = "USER: hi\n\n\nASSISTANT:"
    accepted = 0
    for reply in (WEATHER, TAX, f"{WEATHER}\n{TAX}", "It's sunny."):
        prompt_ids = tokenizer(prompt).input_ids
        ids = tokenizer(f"{prompt} {reply} {END_OF_TURN}").input_ids
        assert ids[:len(prompt_ids)] == prompt_ids
        matcher = xgrammar.GrammarMatcher(compiled)
        assert all(matcher.accept_token(t) for t in ids[len(prompt_ids):]), reply
        accepted += 1
    matcher = xgrammar.GrammarMatcher(compiled)
    assert not matcher.accept_string(' <functioncall> {"name": "get_weather"'), "an unknown function is refused"
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", nargs="+", required=True)
    parser.add_argument("--tokenizers", nargs="+", required=True)
    args = parser.parse_args()
    failed = False
    for plugin in args.plugins:
        ToolParserManager.import_tool_parser(plugin)  # what --tool-parser-plugin PLUGIN does
        for tokenizer_dir in args.tokenizers:
            try:
                checked = check(tokenizer_dir)
                print(f"ok: {plugin}: {checked} replies, whole and streamed, with {Path(tokenizer_dir).name}")
            except (AssertionError, KeyError, TypeError) as err:  # (Key/TypeError: the parser was not registered)
                failed = True
                print(f"failed: {plugin} with {Path(tokenizer_dir).name}: {type(err).__name__}: {err}"[:2000])
    for tokenizer_dir in args.tokenizers:
        try:
            print(f"ok: call grammar: {check_call_grammar(tokenizer_dir)} replies accepted, with {Path(tokenizer_dir).name}")
        except AssertionError as err:
            failed = True
            print(f"failed: call grammar with {Path(tokenizer_dir).name}: {err}"[:2000])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
