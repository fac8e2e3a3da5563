"""Tokenization with assistant-only labels, exact to the token and independent of the tokenizer.

Instead of scanning for hard-coded token ids (the original's method, which breaks on other
tokenizers and turns supervision on for any ``ASS`` piece inside a word such as PASS or CLASS),
the supervised parts are known as *character spans* while the text is rendered, and a token is
supervised when its character offsets overlap a span. One fast-tokenizer call per batch gives the
offsets; the span test is a vectorised ``searchsorted``. A token straddling a span boundary
would be supervised; with Mistral's tokenizer (a newline is its own byte token) and the tiny one
(byte-level BPE) turn boundaries always fall between tokens, which the tests check.

What is supervised, for every assistant turn (plain or function call): its ``ASSISTANT:`` tag,
its content, the `` <|endoftext|>`` marker, the separator and the *role tag of the turn that
follows* (``USER:``, ``FUNCTION RESPONSE:`` or another ``ASSISTANT:``). That last tag teaches the
model whether its turn is over or a second assistant turn follows ("Sure, let me check." then the
call); inference reads the model's prediction at that point. After the last assistant turn the
final ``</s>`` is supervised instead. Everything else (BOS, system prompt, user turns, function
responses, padding) gets -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fcmistral.glaive import GlaiveRow
from fcmistral.prompt import TAG_OF_ROLE, render_turn

IGNORE_INDEX = -100
Overflow = Literal["truncate", "drop"]


@dataclass
class LabelledText:
    """A training text and the character spans whose tokens carry the loss."""

    text: str
    spans: list[tuple[int, int]]
    prompt_chars: int  # length of the system prompt, to report its token count
    ends_with_assistant: bool


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int  # tokens of BOS + system prompt


@dataclass
class Skipped:
    """A row left out, with why; its prompt length still counts for the ``max_length`` check."""

    reason: str
    prompt_tokens: int = 0


def labelled_text(row: GlaiveRow) -> LabelledText:
    """Render a row and record the supervised spans (see the module docstring).

    Turns after the last assistant turn carry no supervision and are left out, so every text
    ends on an assistant turn followed by ``</s>``.
    """
    last = max((i for i, t in enumerate(row.turns) if t.is_assistant), default=-1)
    turns = row.turns[: last + 1]
    pieces, spans, pos = [row.system], [], len(row.system)
    for i, turn in enumerate(turns):
        body = render_turn(turn)
        closing = row.separator if i + 1 < len(turns) else row.trailing
        if turn.is_assistant:
            end = pos + len(body) + len(closing)
            if i + 1 < len(turns):
                end += len(TAG_OF_ROLE[turns[i + 1].role])
            if spans and spans[-1][1] >= pos:  # consecutive assistant turns: one span
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((pos, end))
        pieces.append(body + closing)
        pos += len(body) + len(closing)
    return LabelledText("".join(pieces), spans, len(row.system), last >= 0)


def token_mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for tokens whose ``[start, end)`` overlaps a span; spans sorted and disjoint."""
    if not spans:
        return np.zeros(len(offsets), dtype=bool)
    span_starts = np.fromiter((s for s, _ in spans), dtype=np.int64)
    span_ends = np.fromiter((e for _, e in spans), dtype=np.int64)
    starts, ends = offsets[:, 0], offsets[:, 1]
    idx = np.searchsorted(span_ends, starts, side="right")
    inside = idx < len(spans)
    hit = np.zeros(len(offsets), dtype=bool)
    hit[inside] = span_starts[idx[inside]] < ends[inside]
    return hit & (ends > starts)  # zero-width (special) tokens are never supervised


def _cut_point(token_ends: np.ndarray, spans: list[tuple[int, int]], max_tokens: int) -> int:
    """Number of tokens to keep so that the text stops right after a whole supervised span."""
    for _, span_end in reversed(spans):
        keep = int(np.searchsorted(token_ends, span_end, side="right"))
        if keep <= max_tokens:
            return keep
    return 0


def examples_from_rows(
    rows: list[GlaiveRow], tokenizer, max_length: int, overflow: Overflow = "truncate"
) -> list[Example | Skipped]:
    """Tokenize rows in one batch; each result is an Example or why it was Skipped.

    ``overflow="truncate"`` cuts a too-long example after its last assistant turn that fits
    (never mid-turn); ``"drop"`` skips it, as the original FSDP script did.
    """
    labelled = [labelled_text(r) for r in rows]
    encoded = tokenizer(
        [lt.text for lt in labelled], return_offsets_mapping=True, add_special_tokens=True
    )
    eos = tokenizer.eos_token_id
    results: list[Example | Skipped] = []
    for lt, ids, offsets in zip(labelled, encoded["input_ids"], encoded["offset_mapping"]):
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        prompt_tokens = int(np.searchsorted(offsets[:, 1], lt.prompt_chars, side="right"))
        if not lt.spans:
            results.append(Skipped("no assistant turn", prompt_tokens))
            continue
        if ids[-1] != eos:
            ids = list(ids) + [eos]
            offsets = np.vstack([offsets, [[len(lt.text), len(lt.text) + 1]]])
        spans = lt.spans[:-1] + [(lt.spans[-1][0], len(lt.text) + 1)]  # last span covers </s>
        keep = len(ids)
        if keep > max_length:
            if overflow == "drop":
                results.append(Skipped(f"longer than max_length ({keep} > {max_length} tokens)", prompt_tokens))
                continue
            keep = _cut_point(offsets[:, 1], spans, max_length)
            if keep == 0:
                results.append(
                    Skipped(f"first assistant turn ends beyond max_length ({max_length} tokens)", prompt_tokens)
                )
                continue
        mask = token_mask(offsets[:keep], spans)
        labels = np.where(mask, np.asarray(ids[:keep]), IGNORE_INDEX)
        results.append(Example(list(ids[:keep]), labels.tolist(), prompt_tokens))
    return results
