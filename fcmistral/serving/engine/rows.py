"""One request's reply inside the engine: its sampler, its stops, and the text it may release."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from fcmistral.format.calls import partial_marker_length
from fcmistral.prompt import END_OF_TURN
from fcmistral.serving.engine.client import GenerationRequest, Update


@dataclass
class Row:
    """One request's reply as its tokens arrive: stop strings, held-back text, its updates."""

    request: GenerationRequest
    send: Callable[[Update], None]  # hands an update to the caller (called in the generation thread)
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the reply already sent
    finished: bool = False
    cancelled: bool = False
    prompt_tokens: int = 0
    streamed: bool = True  # send text as it comes (else only the last update)
    sampler: tuple[LogitsProcessorList, torch.Generator] | None = None  # None: greedy


def sampler(request: GenerationRequest, device) -> tuple[LogitsProcessorList, torch.Generator] | None:
    """The row's logits warpers and random generator (seeded when the request has a seed); None: greedy."""
    if request.temperature <= 0:
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
    """Each row's next token: greedy, or sampled with the row's own settings and generator."""
    tokens = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row is not None and row.sampler is not None:
            warpers, generator = row.sampler
            scores = warpers(None, logits[i : i + 1].float())
            tokens[i] = int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator))
    return tokens


def take(row: Row, token: int, tokenizer) -> None:
    """The row takes its new token: it finishes on EOS, the end marker, a stop string or its
    ``max_new_tokens``; otherwise the text that can no longer become a stop is sent (when streamed)."""
    if token == tokenizer.eos_token_id:
        _finish(row, _text(row, tokenizer), "stop", tokenizer)
        return
    row.ids.append(token)
    text = _text(row, tokenizer)
    stops = (END_OF_TURN, *row.request.stop)
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if found:
        _finish(row, text[: min(found)], "stop", tokenizer)
    elif len(row.ids) >= row.request.max_new_tokens:
        _finish(row, text, "length", tokenizer)
    else:
        held = partial_marker_length(text, (" " + END_OF_TURN, END_OF_TURN, *row.request.stop))
        safe = len(text) - max(held, 1 if text.endswith("\ufffd") else 0)  # \ufffd: a character's first bytes
        if safe > row.sent and row.streamed:
            row.send(Update(text[row.sent:safe]))
            row.sent = safe


def _text(row: Row, tokenizer) -> str:
    # Special tokens are kept: in some vocabularies (SmolLM2's) the end marker is one.
    return tokenizer.decode(row.ids, skip_special_tokens=False)


def _finish(row: Row, text: str, reason: str, tokenizer) -> None:
    if reason == "stop" and text.endswith(" ") and _text(row, tokenizer)[len(text):].startswith(END_OF_TURN):
        text = text[:-1]  # the space before the end marker belongs to the marker
    row.finished = True
    if not row.cancelled:
        row.send(Update(text[row.sent:], reason, row.prompt_tokens, len(row.ids)))
