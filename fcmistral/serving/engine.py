"""Generation for the server: continuous batching, so requests are generated together.

A worker thread owns the model and runs one batch of rows, a token per row per step. Between two
steps, requests that arrived join the batch: their prompts are computed (prefill) and their
key/value caches put beside the running rows' (left-padded to the same length; the attention mask
hides the padding and each row keeps its own positions, so a row computes what it would alone).
A finished row leaves at once. Clients that send a new request as soon as they get a reply keep
the batch full instead of waiting for the slowest row of a batch to end.

Prefix cache: requests with the same tools start with the same system prompt (427 of ~430 tokens
for the demo tools). The keys/values of the last prompt computed alone, or of the prefix shared by
rows that joined together (computed once for all of them), are kept; a joining request that starts
the same way copies them and computes only the rest. A prompt seen before whole has only its last
token left, which joins the next step as a reply's token does, with no forward pass of its own.
The cache kept is one prompt's (at most ``--max_prompt_tokens``).

Each row stops on its own: its end marker, its ``stop`` strings, its ``max_tokens``, or its client
gone. Text reaches the caller's event loop as it is generated, holding back what could still
become a stop string, so the end marker never leaks. Each row is greedy or samples with its own
``temperature``/``top_p`` (transformers' logits warpers) and its own random generator.

A request with a ``seed`` runs alone (the batch drains first, and nothing joins it) and computes
its whole prompt: a row's logits can differ in the last bits with the rows beside it, or with keys
computed for another prompt, so only then does its seed alone decide its tokens.

Why not ``generate``: it cannot add rows to a running batch, so with it requests that arrive
while a batch runs wait for all of it (measured: batches of 8 clients fell into pairs of 2 and 6).
Why not transformers' continuous-batching manager (``generate_batch``, behind ``transformers
serve``): on a CPU it attends with SDPA over every row's keys at once (a cost that grows with the
square of the batch) and has one sampling mode for all rows; measured with the tiny model behind
this server, 1/8/32 clients gave 18/63/63 requests/s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import torch
from transformers import DynamicCache, DynamicLayer, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

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


@dataclass
class Update:
    """A piece of a reply; the last one has ``finish_reason`` ("stop" or "length") and the counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Row:
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


class _RoomyLayer(DynamicLayer):
    """A cache layer that grows into spare columns: a step writes its token's keys and values in
    place, where ``DynamicLayer`` copies the whole layer (``torch.cat``), which was a fifth of a
    step's time with 8 rows of ~450 tokens. ``keys``/``values`` are views of the room; when they
    are replaced by other tensors (rows joining or leaving), the next update moves them into a new
    room. Nothing already written is ever changed, so views kept elsewhere stay valid."""

    SPARE = 64  # columns

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        room = getattr(self, "room", None)
        if (room is None or length == 0 or room[0].data_ptr() != self.keys.data_ptr()
                or room[0].shape[:2] != self.keys.shape[:2] or room[0].shape[2] < length + new):
            shape = (*key_states.shape[:2], length + new + self.SPARE, key_states.shape[-1])
            room = self.room = (key_states.new_empty(shape), value_states.new_empty(shape))
            if length:
                room[0][:, :, :length], room[1][:, :, :length] = self.keys, self.values
        room[0][:, :, length:length + new], room[1][:, :, length:length + new] = key_states, value_states
        self.keys, self.values = room[0][:, :, :length + new], room[1][:, :, :length + new]
        return self.keys, self.values


def _new_cache() -> DynamicCache:
    cache = DynamicCache()
    cache.layer_class_to_replicate = _RoomyLayer
    return cache


class _Batch:
    """The rows being generated and their key/value cache: one row per request, its columns
    [left padding | prompt | reply so far]; ``mask`` marks the real ones."""

    def __init__(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor, tokens: list[int]) -> None:
        self.rows, self.cache, self.mask = rows, cache, mask
        self.tokens = torch.tensor(tokens, device=mask.device)  # each row's last token, fed at the next step
        self.positions = mask.sum(dim=1)  # each row's next position

    def join(self, other: _Batch) -> None:
        """Put ``other``'s rows beside these, the shorter cache padded on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for batch in (self, other):
            batch.pad_left(width - batch.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        self.mask = torch.cat([self.mask, other.mask])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.positions = torch.cat([self.positions, other.positions])
        self.rows += other.rows

    def pad_left(self, columns: int) -> None:
        if columns:
            for layer in self.cache.layers:
                layer.keys, layer.values = (torch.nn.functional.pad(t, (0, 0, columns, 0))
                                            for t in (layer.keys, layer.values))
            self.mask = torch.nn.functional.pad(self.mask, (columns, 0))

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows, and drop the columns that are padding in all of them."""
        if len(indices) < len(self.rows):
            self.rows = [self.rows[i] for i in indices]
            index = torch.tensor(indices, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask, self.tokens, self.positions = self.mask[index], self.tokens[index], self.positions[index]
        unused = int(self.mask.any(dim=0).long().argmax())  # leading columns no row uses
        if unused:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            self.mask = self.mask[:, unused:]


class Streaming(ABC):
    """What the app calls: ``stream`` and ``generate`` over a ``start`` that queues a request."""

    @abstractmethod
    def start(self, request: GenerationRequest, streamed: bool, updates: asyncio.Queue) -> Callable[[], None]:
        """Queue ``request``: its updates go to ``updates`` (in the running event loop), pieces of
        text as they are generated when ``streamed``, else only the last, with the whole text.
        Returns what stops it early."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether generation can still happen (for /health)."""

    async def stream(self, request: GenerationRequest, streamed: bool = True) -> AsyncIterator[Update]:
        """The reply's updates as they come; leaving early (a client gone) stops its row."""
        updates: asyncio.Queue = asyncio.Queue()
        stop = self.start(request, streamed, updates)
        try:
            while True:
                update = await updates.get()
                yield update
                if update.finish_reason:
                    return
        finally:
            stop()

    async def generate(self, request: GenerationRequest) -> Update:
        """The whole reply as one update (without waking the caller for every token)."""
        async for update in self.stream(request, streamed=False):
            pass
        return update


class BatchingEngine(Streaming):
    """Generates for many callers with one model (see the module docstring)."""

    def __init__(self, model, tokenizer, max_batch_size: int = 32,
                 after_step: Callable[[], None] | None = None) -> None:
        self.model, self.tokenizer, self.max_batch_size = model, tokenizer, max_batch_size
        self._after_step = after_step  # called in the generation thread once the step's updates are sent
        self._waiting: deque[_Row] = deque()
        self._ready = threading.Condition()
        # The keys/values of the last prompt (or shared prompt prefix) computed, per layer, kept for the
        # next requests that start the same way: the same tools' system prompt, a conversation going on.
        # Tensors are never changed in place (caches grow by concatenation), so keeping them is safe.
        self._kept: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] = ([], [])
        self._worker = threading.Thread(target=self._work, name="generation", daemon=True)
        self._worker.start()

    def encode(self, text: str) -> list[int]:
        """The prompt's tokens, as generation reads them: a caller that checks the prompt's length
        passes them on in ``GenerationRequest.prompt_ids`` rather than have them computed again."""
        return self.tokenizer(text).input_ids

    def alive(self) -> bool:
        return self._worker.is_alive()

    def submit(self, request: GenerationRequest, streamed: bool, send: Callable[[Update], None]) -> _Row:
        """Queue a request whose updates go to ``send``, called in the generation thread."""
        row = _Row(request, send, streamed=streamed)
        with self._ready:
            self._waiting.append(row)
            self._ready.notify()
        return row

    def start(self, request: GenerationRequest, streamed: bool, updates: asyncio.Queue) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        row = self.submit(request, streamed, lambda update: loop.call_soon_threadsafe(updates.put_nowait, update))
        return lambda: setattr(row, "cancelled", True)

    def _arrivals(self, batch: _Batch | None) -> list[_Row]:
        """The waiting rows that may join ``batch`` now (waits for one when there is no batch).
        Rows join in arrival order; a seeded row waits for an empty batch and then runs alone."""
        with self._ready:
            while batch is None and not self._waiting:
                self._ready.wait()
            joining: list[_Row] = []
            room = self.max_batch_size - (len(batch.rows) if batch else 0)
            alone = batch is not None and batch.rows[0].request.seed is not None
            while self._waiting and len(joining) < room and not alone:
                row = self._waiting[0]
                if row.cancelled:
                    self._waiting.popleft()
                    continue
                if row.request.seed is not None and (batch or joining):
                    break
                joining.append(self._waiting.popleft())
                alone = row.request.seed is not None
        return joining

    def _work(self) -> None:
        batch: _Batch | None = None
        while True:
            joining = self._arrivals(batch)
            try:
                with torch.inference_mode():
                    if joining:
                        batch = self._join(batch, self._prefill(joining))
                    if batch is not None:
                        batch = self._step(batch)
            except Exception:  # noqa: BLE001 - logged, reported to every caller of the batch, then go on
                log.exception("generation failed")
                for row in (batch.rows if batch else []) + joining:
                    if not row.finished:
                        row.finished = True
                        row.send(Update("", "error"))
                batch = None
            if self._after_step:
                self._after_step()

    @staticmethod
    def _join(batch: _Batch | None, joining: _Batch | None) -> _Batch | None:
        if batch is None or joining is None:
            return batch or joining
        batch.join(joining)
        return batch

    def _prefill(self, rows: list[_Row]) -> _Batch | None:
        """Compute the joining rows' prompts; each row takes its first token."""
        ids = [row.request.prompt_ids if row.request.prompt_ids is not None else self.encode(row.request.prompt)
               for row in rows]
        for row, row_ids in zip(rows, ids):
            row.prompt_tokens = len(row_ids)
            if row.request.temperature > 0:
                generator = torch.Generator(self.model.device)
                if row.request.seed is not None:
                    generator.manual_seed(row.request.seed)
                else:
                    generator.seed()
                warpers = [TemperatureLogitsWarper(row.request.temperature)]
                if row.request.top_p < 1:
                    warpers.append(TopPLogitsWarper(row.request.top_p))
                row.sampler = (LogitsProcessorList(warpers), generator)
        shared, cache = self._prefix_cache(ids, reuse=rows[0].request.seed is None)
        pad, device = self.tokenizer.pad_token_id, self.model.device
        if shared and all(len(r) == shared + 1 for r in ids):
            # Only each prompt's last token is left (a prompt seen before): it is fed to the model with
            # the batch's next step, as a reply's last token is, rather than by a forward of its own.
            return _Batch(rows, cache, torch.ones(len(rows), shared, dtype=torch.long, device=device),
                          [r[-1] for r in ids])
        # Rows are [shared prefix | padding | own suffix]: with no shared prefix, plain left padding.
        width = max(len(row_ids) for row_ids in ids) - shared
        input_ids = torch.tensor([r[:shared] + [pad] * (width - len(r) + shared) + r[shared:] for r in ids],
                                 device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared) for r in ids],
                            device=device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:],
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        if len(rows) == 1:  # an unpadded prompt: the next request may start with it
            self._kept = (ids[0], [(layer.keys, layer.values) for layer in cache.layers])
        batch = _Batch(rows, cache, mask, self._choose(rows, logits))
        return self._advance(batch)

    def _prefix_cache(self, ids: list[list[int]], reuse: bool) -> tuple[int, DynamicCache]:
        """How many first tokens all rows share whose keys/values are computed once (0 if too few to
        be worth it), and a cache holding them for every row. They are taken from the kept prefix
        when it covers them (and ``reuse``), else computed now and kept."""
        shared = _common_prefix(ids, min(len(r) for r in ids) - 1)  # each row keeps a token of its own
        cache = _new_cache()
        kept_ids, kept_layers = self._kept
        reused = _common_prefix([ids[0], kept_ids], shared) if reuse else 0
        if reused >= MIN_SHARED_PREFIX:
            for index, (keys, values) in enumerate(kept_layers):  # copied: the kept tensors stay as they are
                cache.update(keys[:, :, :reused], values[:, :, :reused], index)
            shared = reused
        elif shared >= MIN_SHARED_PREFIX and len(ids) > 1:
            self.model(input_ids=torch.tensor([ids[0][:shared]], device=self.model.device), past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
            self._kept = (ids[0][:shared], [(layer.keys, layer.values) for layer in cache.layers])
        else:
            return 0, cache
        cache.batch_repeat_interleave(len(ids))
        return shared, cache

    def _step(self, batch: _Batch) -> _Batch | None:
        """One token for every row of the batch."""
        batch.mask = torch.nn.functional.pad(batch.mask, (0, 1), value=1)
        logits = self.model(input_ids=batch.tokens[:, None], attention_mask=batch.mask,
                            position_ids=batch.positions[:, None], past_key_values=batch.cache,
                            use_cache=True).logits[:, -1]
        batch.positions = batch.positions + 1
        batch.tokens = torch.tensor(self._choose(batch.rows, logits), device=batch.mask.device)
        return self._advance(batch)

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.sampler is not None:
                warpers, generator = row.sampler
                scores = warpers(None, logits[i : i + 1].float())
                tokens[i] = int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator))
        return tokens

    def _advance(self, batch: _Batch) -> _Batch | None:
        """Hand each row its new token; finished rows leave the batch (None once it is empty)."""
        for row, token in zip(batch.rows, batch.tokens.tolist()):
            if row.cancelled:
                row.finished = True  # the client is gone: nothing is sent
            else:
                self._take(row, token)
        staying = [i for i, row in enumerate(batch.rows) if not row.finished]
        if not staying:
            return None
        batch.keep(staying)
        return batch

    def _text(self, row: _Row) -> str:
        # Special tokens are kept: in some vocabularies (SmolLM2's) the end marker is one.
        return self.tokenizer.decode(row.ids, skip_special_tokens=False)

    def _take(self, row: _Row, token: int) -> None:
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
            if safe > row.sent and row.streamed:
                row.send(Update(text[row.sent:safe]))
                row.sent = safe

    def _finish(self, row: _Row, text: str, reason: str) -> None:
        if reason == "stop" and text.endswith(" ") and self._text(row)[len(text):].startswith(END_OF_TURN):
            text = text[:-1]  # the space before the end marker belongs to the marker
        row.finished = True
        if not row.cancelled:
            row.send(Update(text[row.sent:], reason, row.prompt_tokens, len(row.ids)))


def _common_prefix(ids: list[list[int]], limit: int) -> int:
    """How many first tokens all rows have in common, at most ``limit``."""
    limit, length = min(limit, *(len(r) for r in ids)), 0
    while length < limit and all(r[length] == ids[0][length] for r in ids):
        length += 1
    return length
