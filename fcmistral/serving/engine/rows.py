"""One request's reply inside the engine: its sampler, its stops, and the text it may release."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from fcmistral.constraint import RowGuide, adjust_rows
from fcmistral.format.streams import ReplyStream
from fcmistral.prompt import END_OF_TURN
from fcmistral.serving.engine.client import GenerationRequest, Update

log = logging.getLogger(__name__)
# Below this, logits divided by the temperature overflow float32 (1e-300 gave NaN probabilities, and
# torch.multinomial raised for the whole batch); sampling there is greedy decoding in all but name.
MIN_TEMPERATURE = 1e-5


@dataclass
class Row:
    """One request's reply as its tokens arrive: stop strings, held-back text, its updates."""

    request: GenerationRequest
    send: Callable[[Update], None]  # hands an update to the caller (called in the generation thread)
    ids: list[int] = field(default_factory=list)
    text: str = ""  # the reply's text so far, decoded a few tokens at a time (see _text)
    decoded: tuple[int, int] = (0, 0)  # (prefix, read) offsets into ids of the incremental decoding
    reply: ReplyStream = field(init=False)  # what of the reply may be released (stops held back)
    unsent: str = ""  # released text not sent yet (a row that is not streamed sends it all at the end)
    finished: bool = False
    cancelled: bool = False
    prompt_tokens: int = 0
    streamed: bool = True  # send text as it comes (else only the last update)
    sampler: tuple[LogitsProcessorList, torch.Generator] | None = None  # None: greedy
    guide: RowGuide | None = None  # the row's call grammar and call bias (None: nothing to adjust)

    def __post_init__(self) -> None:
        # " " + the end marker first: the space before the end marker belongs to the marker.
        self.reply = ReplyStream((" " + END_OF_TURN, END_OF_TURN, *self.request.stop))


def sampler(request: GenerationRequest, device) -> tuple[LogitsProcessorList, torch.Generator] | None:
    """The row's logits warpers and random generator (seeded when the request has a seed); None: greedy."""
    if request.temperature < MIN_TEMPERATURE:  # the limit of sampling as the temperature falls: greedy
        return None
    generator = torch.Generator(device)
    if request.seed is not None:
        generator.manual_seed(request.seed)
    else:
        generator.seed()
    warpers = [TemperatureLogitsWarper(request.temperature)]
    if request.top_p < 1:
        warpers.append(TopPLogitsWarper(request.top_p))
    return LogitsProcessorList(warpers), generator


def choose(rows: list[Row | None], logits: torch.Tensor) -> list[int]:
    """Each row's next token: greedy, or sampled with the row's own settings and generator. A row
    whose sampling fails ends with an error alone; the others go on. A row with a guide has its
    logits masked and biased first (rows without pay nothing)."""
    adjust_rows([row.guide if row is not None and not row.finished else None for row in rows], logits)
    # ``max``'s indices: the first maximal value, as ``argmax``'s, but bf16 ``argmax`` on a CPU is slow
    # (8 rows of SmolLM2's 49,152 logits: 1.35 ms against 0.22 ms, 2-core AMD EPYC Zen 4, 2026-12-04).
    tokens = logits.max(dim=-1).indices.tolist()
    for i, row in enumerate(rows):
        if row is not None and row.sampler is not None and not row.finished:
            warpers, generator = row.sampler
            try:
                scores = warpers(None, logits[i : i + 1].float())
                tokens[i] = int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator))
            except Exception:  # noqa: BLE001 - logged; only this row's request fails
                log.exception("sampling failed for one row; its request ends with an error")
                fail(row)
    return tokens


def fail(row: Row) -> None:
    """End ``row`` with an error update (its request gets a 500; the batch goes on)."""
    if not row.finished:
        row.finished = True
        row.send(Update("", "error"))


def take(row: Row, token: int, tokenizer) -> None:
    """The row takes its new token: it finishes on EOS, the end marker, a stop string or its
    ``max_new_tokens``; otherwise the text that can no longer become a stop is sent (when streamed)."""
    if row.guide is not None:
        row.guide.take(token)
    if token == tokenizer.eos_token_id:
        _finish(row, row.reply.feed(_text(row, tokenizer, final=True), final=True), "stop")
        return
    row.ids.append(token)
    length = len(row.ids) >= row.request.max_new_tokens
    new = row.reply.feed(_text(row, tokenizer, final=length), final=length)
    if row.reply.ended is not None or length:
        _finish(row, new, "stop" if row.reply.ended is not None else "length")
    elif new:
        row.unsent += new
        if row.streamed:
            row.send(Update(row.unsent))
            row.unsent = ""


def _text(row: Row, tokenizer, final: bool = False) -> str:
    """The reply's text, extended by its new tokens. Decoding the whole reply at every token was
    quadratic in its length; this decodes a window, as vLLM's incremental detokenizer does: the
    tokens from ``prefix`` on, minus the text of those before ``read`` (so a sentencepiece space or
    a byte-level merge at the window's start decodes as it does in context); a token that ends inside
    a character waits for the next (unless the reply ends there). Special tokens are kept: in some
    vocabularies (SmolLM2's) the end marker is one."""
    prefix, read = row.decoded
    before = tokenizer.decode(row.ids[prefix:read], skip_special_tokens=False)
    window = tokenizer.decode(row.ids[prefix:], skip_special_tokens=False)
    if len(window) > len(before) and (final or not window.endswith("\ufffd")):
        row.text += window[len(before):]
        row.decoded = (read, len(row.ids))
    return row.text


def _finish(row: Row, new: str, reason: str) -> None:
    row.finished = True
    if not row.cancelled:
        row.send(Update(row.unsent + new, reason, row.prompt_tokens, len(row.ids)))
