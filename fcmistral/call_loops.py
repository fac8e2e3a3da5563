"""A penalty on loops inside a call: DRY ("Don't Repeat Yourself", p-e-w's sampler, which llama.cpp
offers as ``--dry-multiplier``), applied to the call being written only.

Why: under the call grammar, the last unreadable calls of a small fine-tuned model are loops the
grammar cannot end, an array's items repeated until the token limit (``[..., 91, 92, 91, 92, ...``,
``"Stranger Things", "Stranger Things", ...``: docs/evaluation.md). transformers' repetition penalty
lowers every token already written, JSON's quotes and commas too, and cut BFCL simple from 58% to
10%. DRY lowers only the token that would extend a sequence already written, by ``multiplier *
base ** (length - allowed_length)``, so a loop is broken while tokens that merely recur are free.

Two departures from DRY over the whole text, both for calls: matches are sought only inside the
current call (from its marker on), since a parallel turn's calls of one function share their whole
start and a call copies its values from the prompt; and there are no sequence breakers (DRY's
default ones, quotes and colons, would spare a loop of strings). ``ALLOWED_LENGTH`` 8 rather than
DRY's 2, set from the vocabularies, not tuned on a benchmark: Mistral's and SmolLM2's write digits
one token each, so ``91, 91`` already repeats four tokens (``9 1 , ␣``) and a value written twice in
one call (``"from": "Paris", "to": "Paris"``) three; with 8, a two-digit number is lowered from its
third time in a row on (by 1.4, then 13 at its fourth), a short string from its third.
No library provides DRY for transformers' ``generate``, hence this implementation of its definition.
Each row applies it through its guide (fcmistral.constraint), in offline generation and the server alike.
"""

from __future__ import annotations

import torch

from fcmistral.modeling import text_encoder
from fcmistral.prompt import CALL_SEPARATOR, FUNCTION_CALL_MARKER

BASE = 1.75  # DRY's default growth per matched token
ALLOWED_LENGTH = 8
MAX_MATCH = 50  # DRY's cap on a match's length (bounds the work and the penalty's exponent)


def repeat_lengths(tokens: list[int], max_match: int = MAX_MATCH) -> dict[int, int]:
    """For each token that followed an earlier occurrence of ``tokens``' last token: the length of
    the longest sequence ending there that ``tokens`` also ends with (what writing it would extend)."""
    last, lengths = tokens[-1], {}
    for i in range(len(tokens) - 1):
        if tokens[i] != last:
            continue
        n = 1
        while n < max_match and i - n >= 0 and tokens[i - n] == tokens[-1 - n]:
            n += 1
        following = tokens[i + 1]
        lengths[following] = max(lengths.get(following, 0), n)
    return lengths


def marker_tokens(tokenizer) -> list[int]:
    """The call marker's own tokens: its tokens after a space (a turn's first call) and after the
    separator (the next ones) can differ at the start, so their common end is what marks a call."""
    encoder = text_encoder(tokenizer)
    spaced = encoder.encode(" " + FUNCTION_CALL_MARKER).ids
    separated = encoder.encode(CALL_SEPARATOR + FUNCTION_CALL_MARKER).ids
    common = 0
    while common < min(len(spaced), len(separated)) and spaced[-1 - common] == separated[-1 - common]:
        common += 1
    if not common:
        raise ValueError("the call marker has no tokens of its own in this vocabulary")
    return spaced[-common:]


def call_tokens(reply: list[int], marker: list[int], starts_in_call: bool = False) -> list[int] | None:
    """The tokens of the call being written, after its marker; None outside a call.
    ``starts_in_call``: the turn's start, written in the prompt, opened a call (``tool_choice``)."""
    n = len(marker)
    for end in range(len(reply), n - 1, -1):
        if reply[end - n:end] == marker:
            return reply[end:]
    return reply if starts_in_call else None


def lower_loops(call: list[int], logits: torch.Tensor, multiplier: float) -> None:
    """Lower, in place, the ``logits`` (one row) of the tokens that would extend a sequence already
    written in ``call``, by ``multiplier * BASE ** (length - ALLOWED_LENGTH)``."""
    if len(call) <= ALLOWED_LENGTH:
        return
    for token, length in repeat_lengths(call).items():
        if length >= ALLOWED_LENGTH:
            logits[token] -= multiplier * BASE ** (length - ALLOWED_LENGTH)
