"""The grammar of a function call, generated from prompt.py as the chat template is.

An assistant turn under the constraint is free text until the call marker (a turn opening with the
marker's "<" is a call: see ``call_grammar``); from ``<functioncall>`` on it is exactly what
``format_call`` writes: a name among the offered functions, then arguments that are JSON valid for
*that* function's schema in ``json.dumps``'s spacing, then either the next call of the turn
(``format_calls``' separator and marker) or the end marker. The schema's
properties come in the order it declares them (as glaive's calls write them; xgrammar's
``any_order`` would drop the check of required keys). See ``_arguments_grammar`` for spacing.

The grammar is written as an xgrammar *structural tag* (a JSON document): xgrammar is the
structured-generation backend of vLLM and SGLang, so the same document constrains our own
generation (fcmistral.constraint) and vLLM's (its ``structural_tag`` structured output) and the
two cannot drift. (llguidance, the other candidate, would need the call written as a Lark grammar
by hand; xgrammar compiles each function's JSON schema itself.)
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from fcmistral.format.calls import arguments_schema
from fcmistral.prompt import CALL_SEPARATOR, END_OF_TURN, FUNCTION_CALL_MARKER, format_call

# Modes: "auto" (free text, or calls), "required" (the turn is calls only).
MODES = ("auto", "required")
# How a text turn opens in "auto" mode: not with the call marker's "<", after its space or not.
TEXT_OPENING = f"[^ {FUNCTION_CALL_MARKER[0]}]| [^{FUNCTION_CALL_MARKER[0]}]"


def _const(value: str) -> dict[str, Any]:
    return {"type": "const_string", "value": value}


def arguments_grammar(schema: dict[str, Any]) -> str:
    return _arguments_grammar(json.dumps(schema))


@lru_cache(maxsize=1024)  # a server sees the same tools again and again
def _arguments_grammar(schema: str) -> str:
    """The EBNF of JSON valid for ``schema`` in ``json.dumps``'s spacing (``", "``, ``": "``, no
    other whitespace): the model writes what it was trained on, and a weak model cannot wander into
    endless whitespace, a known failure of JSON-constrained decoding. A string never holds the end
    marker (see ``_without_markers``)."""
    import xgrammar

    # strict_mode=False: where a schema does not say, keys it does not name are allowed, as JSON Schema
    # allows them; the top level says (``arguments_schema``): the grammar and the checker agree.
    text = str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False, separators=(", ", ": "),
                                                 strict_mode=False))
    # xgrammar prints a character below U+0100 in a literal as \xNN, and its parser reads \x greedily:
    # an enum value "Québec" came back as "Qu\xe9bec", read as U+0E9B + "ec", and the right call was
    # refused. Four-digit escapes read back as printed.
    return _without_markers(_HEX_ESCAPE.sub(lambda m: f"{m[1]}\\u00{m[2]}", text))


_HEX_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\x([0-9a-fA-F]{2})")
_STRING_RULE = re.compile(r'^basic_string_sub ::= \(\("\\""\) \| \(\[\^(?P<banned>[^\]]*)\] basic_string_sub\) \| '
                          r'\("\\\\" basic_escape basic_string_sub\)\)(?P<lookahead> \(=.*\))?$', re.MULTILINE)


# Texts no string of a call may hold: generation stops at the end marker's text wherever it appears,
# so a value holding it cuts the call short. It is excluded by its first two characters, "<|", which
# also open every special token of the usual chat tokenizers (<|im_end|>, <|eot_id|>...): each
# character of an excluded text is a rule of the grammar. Known and left: the call marker inside a
# value, which the parser reads as the next call; excluding it too (13 more rules) made compiling
# 2x slower on the toy schemas and 5-9x on the sample and BFCL tests' (xgrammar 0.1.x, this CPU).
UNWRITABLE_IN_STRINGS = (END_OF_TURN[:2],)


def _without_markers(ebnf: str) -> str:
    """xgrammar's JSON string rule rewritten so that no string holds one of ``UNWRITABLE_IN_STRINGS``.

    Found on the fine-tuned SmolLM2 under the constraint: it wrote the end marker inside a value (its
    tokenizer has ``<|endoftext|>`` as one token, which xgrammar matches as text): generation stopped
    mid-call, an unreadable call, which the grammar was there to rule out. The rule becomes the
    automaton of "no occurrence" (Aho-Corasick over the texts' prefixes): one rule per prefix just
    written; any other text, escapes included, is allowed as before. (xgrammar's own ``excludes``
    exists only in its structural-tag JSON format, which allows free whitespace and refused 196 of
    the 515 sample calls' tokenizations in a trial.)
    """
    match = _STRING_RULE.search(ebnf)
    if match is None:  # a new xgrammar printing its string rule otherwise: fail loudly, not unguarded
        raise RuntimeError("xgrammar's JSON string rule has an unknown form: cannot exclude the markers")
    banned, lookahead = match["banned"], match["lookahead"] or ""
    markers = UNWRITABLE_IN_STRINGS
    prefixes = sorted({m[:k] for m in markers for k in range(len(m))}, key=lambda p: (len(p), p))
    names = {p: "basic_string_sub" if not p else f"basic_string_sub_m{i}" for i, p in enumerate(prefixes)}
    chars = sorted(set("".join(markers)))

    def step(state: str, char: str) -> str | None:
        """The longest suffix of ``state + char`` that is a marker prefix; None where a marker ends."""
        text = state + char
        if any(text.endswith(m) for m in markers):
            return None
        while text and text not in names:
            text = text[1:]
        return text

    rules = []
    for state in prefixes:
        moves = {c: step(state, c) for c in chars}
        moves = {c: to for c, to in moves.items() if to != ""}  # the other characters lead back to ""
        excluded = banned + "".join("\\" + c if c in "]\\^-" else c for c in moves)
        options = ['("\\"")', f"([^{excluded}] basic_string_sub)", '("\\\\" basic_escape basic_string_sub)']
        options += [f"({json.dumps(c)} {names[to]})" for c, to in moves.items() if to is not None]
        rules.append(f"{names[state]} ::= ({' | '.join(options)}){lookahead}")
    # Elsewhere (an object key's first character is its own rule), a character that leads into the
    # string rule may start a marker: it leads into the rule of that prefix instead.
    starts = sorted({m[0] for m in markers})

    def into_string(m: re.Match) -> str:
        firsts = [c for c in starts if c not in m[1]]
        return " | ".join([f"([^{m[1]}{''.join(firsts)}] basic_string_sub)",
                           *(f"({json.dumps(c)} {names[c]})" for c in firsts)])

    rest = _INTO_STRING.sub(into_string, ebnf[:match.start()] + "\0" + ebnf[match.end():])
    return rest.replace("\0", "\n".join(rules))


_INTO_STRING = re.compile(r"\(\[\^((?:\\.|[^\]\\])*)\] basic_string_sub\)")


def _call(function: dict[str, Any]) -> dict[str, Any]:
    """One call of ``function`` after its marker: ``format_call``'s text (so the spacing and quoting
    are the training data's) with the arguments replaced by their schema's grammar."""
    head, tail = format_call(function["name"], {}).split("{}'", 1)  # ... "arguments": '{}'}
    schema = arguments_schema(function) or {"type": "object"}
    arguments = {"type": "grammar", "grammar": arguments_grammar(schema)}
    return {"type": "sequence", "elements": [_const(head.removeprefix(FUNCTION_CALL_MARKER)), arguments,
                                             _const("'" + tail)]}


def calls_format(functions: list[dict[str, Any]], parallel: bool = True) -> dict[str, Any]:
    """The text after a turn's first marker: one call or more (``parallel``), then the end marker."""
    one = {"type": "or", "elements": [_call(f) for f in functions]} if len(functions) > 1 else _call(functions[0])
    elements = [one]
    if parallel:
        elements.append({"type": "star", "content": {"type": "sequence", "elements": [
            _const(CALL_SEPARATOR + FUNCTION_CALL_MARKER), one]}})
    elements.append(_const(" " + END_OF_TURN))
    return {"type": "sequence", "elements": elements}


def call_grammar(functions: list[dict[str, Any]], mode: str = "auto", parallel: bool = True) -> str:
    """The structural tag (JSON text) for an assistant turn offered ``functions``.

    ``auto``: calls of ``functions``, or text that does not open with the marker's "<" and from a
    call marker on, calls; ``required``: the turn starts with a call (``functions`` narrowed to one
    is a named ``tool_choice``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if not functions:
        raise ValueError("a call grammar needs at least one function")
    calls = calls_format(functions, parallel)
    call_turn = {"type": "sequence", "elements": [_const(" " + FUNCTION_CALL_MARKER), calls]}
    if mode == "required":
        fmt = call_turn
    else:
        # A turn that opens with "<" is a call: text opens otherwise, and may hold a marker later.
        # Why: free text let a model that took the marker's first token (" <") under a negative call
        # bias spell the rest its own way, " <function call> {...}" or " <function identify_bird: ...":
        # unreadable, so counted as no call (SmolLM2, row l, seed 7: 2 of BFCL simple's 12 uncalled,
        # 1 irrelevance "declined"). Cost: the calls' rules are in the grammar twice, and compiling a
        # BFCL multiple question's tools took 1.5x as long (27 ms against 18 ms, SmolLM2's tokenizer).
        text = {"type": "sequence", "elements": [{"type": "regex", "pattern": TEXT_OPENING},
                                                 {"type": "dispatch", "rules": [[FUNCTION_CALL_MARKER, calls]],
                                                  "loop": False}]}
        fmt = {"type": "or", "elements": [call_turn, text]}
    return json.dumps({"type": "structural_tag", "format": fmt}, ensure_ascii=False, sort_keys=True)

