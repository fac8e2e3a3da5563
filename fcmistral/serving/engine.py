"""Batched generation for the server: requests that wait together are generated together.

A worker thread owns the model. It takes every waiting request that can share a ``generate``
call (same sampling settings; a request with a seed runs alone, so its seed decides its tokens)
and runs them as one padded batch. Each row stops on its own: a stopping criterion returns
one flag per row (its end marker, its ``stop`` strings, its ``max_tokens``, or its client gone),
so short replies do not wait for long ones and one request's stop strings never cut another's.
Text reaches the caller's event loop as it is generated, holding back what could still become a
stop string, so the end marker never leaks.

Why not transformers' continuous batching (``generate_batch`` / the manager behind ``transformers
serve``): it schedules paged attention kernels meant for GPUs, and it has no per-request stop
strings; this queue in front of ``generate`` is small and does what the server needs on a CPU.
Requests that arrive while a batch runs wait for the next one (static batching).

Requests with the same tools share their system prompt, which is most of the prompt (427 of ~430
tokens for the demo tools). A batch computes that shared prefix once and gives every row a copy of
its key/value cache; each row's own tokens follow after its padding. Prefill, which grows with the
batch while decoding barely does, then costs about one prompt instead of one per row.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from fcmistral.format.calls import partial_marker_length
from fcmistral.prompt import END_OF_TURN

log = logging.getLogger(__name__)
MIN_SHARED_PREFIX = 16  # tokens: below this, computing a prefix apart costs more than it saves


@dataclass
class GenerationRequest:
    """One prompt's generation settings. ``temperature`` 0 is greedy decoding."""

    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    prompt_ids: list[int] | None = None  # the prompt's tokens when the caller has them (see BatchingEngine.encode)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one ``generate`` call."""
        if self.seed is not None:
            return ("seed", id(self))
        return ("greedy",) if self.temperature == 0 else ("sample", self.temperature, self.top_p)


@dataclass
class Update:
    """A piece of a reply; the last one has ``finish_reason`` ("stop" or "length") and the counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Row:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    updates: asyncio.Queue
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the reply already sent
    finished: bool = False
    cancelled: bool = False
    prompt_tokens: int = 0

    def send(self, update: Update) -> None:
        self.loop.call_soon_threadsafe(self.updates.put_nowait, update)


class _Rows(StoppingCriteria):
    """Receives each step's tokens (as the streamer) and says which rows are done (as the criterion)."""

    def __init__(self, rows: list[_Row], tokenizer) -> None:
        self.rows, self.tokenizer, self.first = rows, tokenizer, True

    def put(self, value: torch.Tensor) -> None:
        if self.first:  # generate() first passes the prompt ids
            self.first = False
            return
        for row, token in zip(self.rows, value.view(-1).tolist()):
            if not row.finished:
                self._advance(row, token)

    def end(self) -> None:
        for row in self.rows:
            if not row.finished:
                self._finish(row, self._text(row), "length")

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        for row in self.rows:
            if row.cancelled and not row.finished:
                row.finished = True  # the client is gone: nothing is sent
        return torch.tensor([row.finished for row in self.rows], device=input_ids.device)

    def _text(self, row: _Row) -> str:
        # Special tokens are kept: in some vocabularies (SmolLM2's) the end marker is one.
        return self.tokenizer.decode(row.ids, skip_special_tokens=False)

    def _advance(self, row: _Row, token: int) -> None:
        if token == self.tokenizer.eos_token_id:
            self._finish(row, self._text(row), "stop")
            return
        row.ids.append(token)
        text = self._text(row)
        stops = (END_OF_TURN, *row.request.stop)
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            self._finish(row, text[: min(found)], "stop")
        elif len(row.ids) >= row.request.max_new_tokens:
            self._finish(row, text, "length")
        else:
            held = partial_marker_length(text, (" " + END_OF_TURN, END_OF_TURN, *row.request.stop))
            safe = len(text) - max(held, 1 if text.endswith("\ufffd") else 0)  # \ufffd: a character's first bytes
            if safe > row.sent:
                row.send(Update(text[row.sent:safe]))
                row.sent = safe

    def _finish(self, row: _Row, text: str, reason: str) -> None:
        if reason == "stop" and text.endswith(" ") and self._text(row)[len(text):].startswith(END_OF_TURN):
            text = text[:-1]  # the space before the end marker belongs to the marker
        row.finished = True
        if not row.cancelled:
            row.send(Update(text[row.sent:], reason, row.prompt_tokens, len(row.ids)))


class BatchingEngine:
    """Generates for many callers with one model (see the module docstring)."""

    def __init__(self, model, tokenizer, max_batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.max_batch_size = model, tokenizer, max_batch_size
        self._waiting: deque[_Row] = deque()
        self._ready = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="generation", daemon=True)
        self._worker.start()

    def encode(self, text: str) -> list[int]:
        """The prompt's tokens, as generation reads them: a caller that checks the prompt's length
        passes them on in ``GenerationRequest.prompt_ids`` rather than have them computed again."""
        return self.tokenizer(text).input_ids

    def submit(self, request: GenerationRequest) -> _Row:
        """Queue a request; its updates arrive on ``row.updates`` in the calling event loop."""
        row = _Row(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._ready:
            self._waiting.append(row)
            self._ready.notify()
        return row

    async def stream(self, request: GenerationRequest):
        """The reply's updates as they come; leaving early (a client gone) stops its row."""
        row = self.submit(request)
        try:
            while True:
                update = await row.updates.get()
                yield update
                if update.finish_reason:
                    return
        finally:
            row.cancelled = True

    async def generate(self, request: GenerationRequest) -> Update:
        """The whole reply as one update."""
        parts = []
        async for update in self.stream(request):
            parts.append(update.text)
        return Update("".join(parts), update.finish_reason, update.prompt_tokens, update.completion_tokens)

    def _next_batch(self) -> list[_Row]:
        with self._ready:
            while not self._waiting:
                self._ready.wait()
            key = self._waiting[0].request.batch_key()
            batch = [row for row in self._waiting if row.request.batch_key() == key and not row.cancelled]
            batch = batch[: self.max_batch_size]
            for row in list(self._waiting):
                if row in batch or row.cancelled:
                    self._waiting.remove(row)
        return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self._generate(batch)
            except Exception:  # noqa: BLE001 - logged, reported to every caller of the batch, then go on
                log.exception("generation failed")
                for row in batch:
                    if not row.finished:
                        row.finished = True
                        row.send(Update("", "error"))

    @torch.inference_mode()
    def _generate(self, batch: list[_Row]) -> None:
        ids = [row.request.prompt_ids if row.request.prompt_ids is not None else self.encode(row.request.prompt)
               for row in batch]
        for row, row_ids in zip(batch, ids):
            row.prompt_tokens = len(row_ids)
        shared = _shared_prefix(ids) if len(batch) > 1 else 0
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        # Rows are [shared prefix | padding | own suffix]: with no shared prefix, plain left padding. The
        # attention mask hides the padding and positions continue across it, so each row computes what
        # it would alone (tested).
        width = max(len(row_ids) for row_ids in ids) - shared
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r[:shared] + [pad] * (width - len(r) + shared) + r[shared:] for r in ids])
        attention_mask = torch.tensor([[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared)
                                       for r in ids])
        extra = {}
        if shared:  # the prefix (the tools' system prompt, usually) is computed once for the whole batch
            cache = DynamicCache(config=getattr(self.model, "config", None))
            self.model(input_ids=input_ids[:1, :shared].to(self.model.device), past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(len(batch))
            extra["past_key_values"] = cache
        first = batch[0].request
        sampling = ({"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
                    if first.temperature > 0 else {"do_sample": False})
        if first.seed is not None:
            torch.manual_seed(first.seed)
        rows = _Rows(batch, self.tokenizer)
        self.model.generate(
            input_ids=input_ids.to(self.model.device), attention_mask=attention_mask.to(self.model.device),
            max_new_tokens=max(row.request.max_new_tokens for row in batch), streamer=rows,
            stopping_criteria=StoppingCriteriaList([rows]), eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad, **sampling, **extra,
        )


def _shared_prefix(ids: list[list[int]]) -> int:
    """Tokens all rows start with, leaving every row at least one of its own (generate needs one)."""
    limit = min(len(r) for r in ids) - 1
    length = 0
    while length < limit and all(r[length] == ids[0][length] for r in ids):
        length += 1
    return length
