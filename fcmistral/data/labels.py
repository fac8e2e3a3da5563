"""Tokenization with assistant-only labels, exact to the token and independent of the tokenizer.

Instead of scanning for hard-coded token ids (which breaks on other tokenizers and turns
supervision on for any ``ASS`` piece inside a word such as PASS or CLASS),
the supervised parts are known as *character spans* while the text is rendered, and a token is
supervised when its characters overlap a span. Batched fast-tokenizer calls encode the texts
(each distinct system prompt once, fcmistral.data.encoding); each span's tokens are found with two
character-to-token look-ups. A token straddling a span boundary
would be supervised; with Mistral's tokenizer (a newline is its own byte token) and the tiny one
(byte-level BPE) turn boundaries always fall between tokens, which the tests check.

What is supervised, for every assistant turn (plain or function call): its ``ASSISTANT:`` tag,
its content, the `` <|endoftext|>`` marker, the separator and the *role tag of the turn that
follows* (``USER:``, ``FUNCTION RESPONSE:`` or another ``ASSISTANT:``). That last tag teaches the
model whether its turn is over or a second assistant turn follows ("Sure, let me check." then the
call); inference reads the model's prediction at that point. After the last assistant turn the
final ``</s>`` is supervised instead. Everything else (BOS, system prompt, user turns, function
responses, padding) gets -100.

The *decision* of an assistant turn is its first content token (after ``ASSISTANT:``): there the
model chooses between a call (`` <functioncall>``) and words, which is the whole of knowing when not
to call, yet it is about one supervised token in a hundred. Examples record where their decisions
are (``Example.decisions``) so that training can weigh them more (``--decision_weight``):
``SupervisedLogits`` lays the marks out as the labels are and sends the weights with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fcmistral.data.encoding import SharedPrefixEncoder, TokenizedText, first_token
from fcmistral.format.glaive import GlaiveRow
from fcmistral.prompt import TAG_OF_ROLE, render_turn

IGNORE_INDEX = -100
Overflow = Literal["truncate", "drop"]


@dataclass
class LabelledText:
    """A training text and the character spans whose tokens carry the loss."""

    text: str
    spans: list[tuple[int, int]]
    prompt_chars: int  # length of the system prompt: where the encoder cuts the text
    decisions: list[int]  # where each assistant turn's content starts (characters)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int  # tokens of BOS + system prompt
    decisions: list[int]  # indices of the tokens where an assistant turn's content starts


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
    pieces, spans, decisions, pos = [row.system], [], [], len(row.system)
    for i, turn in enumerate(turns):
        body = render_turn(turn)
        closing = row.separator if i + 1 < len(turns) else row.trailing
        if turn.is_assistant:
            decisions.append(pos + len(TAG_OF_ROLE[turn.role]) + 1)  # render_turn: "TAG content"
            end = pos + len(body) + len(closing)
            if i + 1 < len(turns):
                end += len(TAG_OF_ROLE[turns[i + 1].role])
            if spans and spans[-1][1] >= pos:  # consecutive assistant turns: one span
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((pos, end))
        pieces.append(body + closing)
        pos += len(body) + len(closing)
    return LabelledText("".join(pieces), spans, len(row.system), decisions)


def _span_tokens(encoding: TokenizedText, start: int, end: int) -> tuple[int, int] | None:
    """``[first, stop)`` token indices overlapping the characters ``[start, end)``."""
    first = first_token(encoding, start, end)
    last = first_token(encoding, end - 1, start - 1, -1)
    return None if first is None else (first, last + 1)


def examples_from_rows(
    rows: list[GlaiveRow], tokenizer, max_length: int, overflow: Overflow = "truncate",
    encoder: SharedPrefixEncoder | None = None,
) -> list[Example | Skipped]:
    """Tokenize rows in one batch; each result is an Example or why it was Skipped.

    ``overflow="truncate"`` cuts a too-long example after its last assistant turn that fits
    (never mid-turn); ``"drop"`` skips it (FSDP/train.py, which trains every token of a row). The Rust encodings
    answer "which token covers this character" directly, so no per-token Python work is done.
    Pass one ``encoder`` for all the batches of a dataset so that each distinct system prompt is
    tokenized once (fcmistral.data.encoding).
    """
    labelled = [labelled_text(r) for r in rows]
    encoder = encoder or SharedPrefixEncoder(tokenizer)
    encodings = encoder.encode([lt.text for lt in labelled], [lt.prompt_chars for lt in labelled])
    eos = tokenizer.eos_token_id
    results: list[Example | Skipped] = []
    for lt, encoding in zip(labelled, encodings):
        ids = encoding.ids
        prompt_tokens = encoding.prefix_tokens
        if not lt.spans:
            results.append(Skipped("no assistant turn", prompt_tokens))
            continue
        if ids[-1] != eos:
            ids = ids + [eos]
        ranges = [_span_tokens(encoding, s, e) for s, e in lt.spans]
        if None in ranges:  # a tokenizer whose normalizer drops every character of a span
            results.append(Skipped("a supervised span maps to no token", prompt_tokens))
            continue
        ranges[-1] = (ranges[-1][0], len(ids))  # the last span goes on to cover </s>
        keep = len(ids)
        if keep > max_length:
            if overflow == "drop":
                results.append(Skipped(f"longer than max_length ({keep} > {max_length} tokens)", prompt_tokens))
                continue
            # Stop right after the last whole supervised span that fits.
            keep = next((stop for _, stop in reversed(ranges) if stop <= max_length), 0)
            if keep == 0:
                results.append(
                    Skipped(f"first assistant turn ends beyond max_length ({max_length} tokens)", prompt_tokens)
                )
                continue
        labels = [IGNORE_INDEX] * keep
        for first, stop in ranges:
            stop = min(stop, keep)
            labels[first:stop] = ids[first:stop]
        found = (first_token(encoding, pos, len(lt.text)) for pos in lt.decisions)
        decisions = [token for token in found if token is not None and token < keep]
        results.append(Example(ids[:keep], labels, prompt_tokens, decisions))
    return results


DECISION = "decision"  # the column of decision marks (1 at an Example's decisions, 0 elsewhere)


def decision_marks(example: Example) -> list[int]:
    marks = [0] * len(example.input_ids)
    for index in example.decisions:
        marks[index] = 1
    return marks


def _shifted_targets(labels):
    import torch.nn.functional as F

    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]


def with_supervised_logits(batch: dict) -> dict:
    """``batch`` with transformers' ``logits_to_keep`` (a boolean batch x length mask of the positions
    that predict a supervised token) and the matching ``shift_labels`` (those targets), derived
    from its labels: see ``SupervisedLogits``."""
    targets = _shifted_targets(batch["labels"])
    keep = targets != IGNORE_INDEX
    batch["logits_to_keep"], batch["shift_labels"] = keep, targets[keep]
    return batch


class SupervisedLogits:
    """A collator wrapper: the model computes its head (the projection onto the vocabulary) only at
    the positions that predict a supervised token.

    Prompts (function schemas, user turns, function responses) are most of a glaive row's tokens, and
    their logits feed no loss; at SmolLM2's 49,152-token vocabulary the head and its fp32 loss
    buffers are a large part of a step's time and memory. The batch carries transformers' own
    ``logits_to_keep`` and ``shift_labels`` (``with_supervised_logits``), so the model's own loss, its
    ``num_items_in_batch`` reduction and the Trainer's and FSDP loop's scaling stay as they are: the
    same loss and gradients, fewer logits.

    Rows with decision marks (the ``decision`` column) also get ``loss_weights``, one per kept target:
    ``decision_weight`` where the target is a decision, 1 elsewhere (fcmistral.training.loss). The
    marks are laid out by the wrapped collator itself, passed as the labels of a second collation,
    so they are padded, flattened or packed exactly as the labels are, whichever collator it is.
    """

    def __init__(self, collate, decision_weight: float = 1.0) -> None:
        self.collate = collate
        self.decision_weight = decision_weight

    def __call__(self, rows):
        marks = [row[DECISION] for row in rows] if rows and DECISION in rows[0] else None
        if marks is not None:
            rows = [{k: v for k, v in row.items() if k != DECISION} for row in rows]
        batch = with_supervised_logits(self.collate(rows))
        if marks is not None and self.decision_weight != 1:
            laid_out = self.collate([{**row, "labels": m} for row, m in zip(rows, marks)])["labels"]
            is_decision = _shifted_targets(laid_out)[batch["logits_to_keep"]] == 1
            batch["loss_weights"] = 1 + (self.decision_weight - 1) * is_decision.float()
        return batch
