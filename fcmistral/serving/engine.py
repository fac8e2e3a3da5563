"""Generation for the server: continuous batching, so requests are generated together.

A worker thread owns the model and runs one batch of rows, a token per row per step. Between two
steps, requests that arrived join the batch: their prompts are computed (prefill) and their
key/value caches written into free slots of the batch's cache, each row's columns ending where the
batch's do (a shorter row is padded in front; the attention mask hides the padding and each row
keeps its own positions, so a row computes what it would alone). A finished row frees its slot at
once. Clients that send a new request as soon as they get a reply keep the batch full instead of
waiting for the slowest row of a batch to end. The cache is not copied when rows come and go (see
``_SlotLayer``): with 32 rows those copies had cost more than the steps.

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
from typing import Any, AsyncIterator, Callable

import torch
from transformers import DynamicCache, DynamicLayer, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from fcmistral.format.calls import partial_marker_length
from fcmistral.prompt import END_OF_TURN

log = logging.getLogger(__name__)
MIN_SHARED_PREFIX = 16  # tokens: below this, computing a prefix apart costs more than it saves
SPARE_COLUMNS = 128  # a batch's cache has room for this many more steps before it is moved
IDLE_SLOTS_STEPS = 128  # steps with most slots free before the batch gives them up (a copy)


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


@dataclass
class _Group:
    """Rows whose prompts were just computed: their cache and mask (per row [shared prefix |
    padding | own suffix]) and each row's token to feed at the next step."""

    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor
    tokens: list[int]


class _SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot of the batch, in a room with spare columns. The
    batch uses columns [start, end): a step writes its column in place (``DynamicLayer`` copies the
    whole layer at every step), columns no row needs any more are left behind by moving ``start``,
    and a joining row is written into a free slot; only a wider or longer batch moves the cache."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.move(keys, values)

    def move(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put ``keys``/``values`` (slots, heads, columns, dim) into a new room."""
        shape = (*keys.shape[:2], keys.shape[2] + SPARE_COLUMNS, keys.shape[3])
        self.room = (keys.new_empty(shape), values.new_empty(shape))
        self.start, self.end = 0, keys.shape[2]
        self.room[0][:, :, :self.end], self.room[1][:, :, :self.end] = keys, values
        self._view()

    def _view(self) -> None:
        """``keys``/``values``: the columns in use, as views of the room."""
        self.keys, self.values = (part[:, :, self.start:self.end] for part in self.room)

    def skip(self, columns: int) -> None:
        """Leave the first ``columns`` behind."""
        self.start += columns
        self._view()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if self.end + new > self.room[0].shape[2]:
            self.move(self.keys, self.values)
        self.room[0][:, :, self.end:self.end + new] = key_states
        self.room[1][:, :, self.end:self.end + new] = value_states
        self.end += new
        self._view()
        return self.keys, self.values

    def place(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one row's keys/values (heads, columns, dim) at the end of ``slot``. The columns
        before keep an earlier row's values: finite numbers, which the row's mask hides."""
        first = self.end - keys.shape[1]
        self.room[0][slot, :, first:self.end], self.room[1][slot, :, first:self.end] = keys, values


class _Batch:
    """The rows being generated, one per slot (``None``: a free slot, until a joining row takes it),
    and their cache; ``mask`` [slots, columns] marks each slot's real columns (a row's columns end
    where the batch's do, so a shorter row is padded in front)."""

    def __init__(self, group: _Group, pad: int) -> None:
        self.pad, self.rows, self.mask = pad, list(group.rows), group.mask
        self.cache = DynamicCache()
        self.cache.layers = [_SlotLayer(layer.keys, layer.values) for layer in group.cache.layers]
        self.tokens, self.positions = list(group.tokens), group.mask.sum(dim=1).tolist()
        self.idle_steps = 0  # consecutive steps with most slots free

    def live(self) -> list[_Row]:
        return [row for row in self.rows if row is not None]

    def add(self, group: _Group) -> None:
        """The group's unfinished rows take free slots (new slots when too few are free); the
        batch's columns grow in front when the group's are more."""
        joining = [i for i, row in enumerate(group.rows) if not row.finished]
        wider = group.mask.shape[1] - self.mask.shape[1]
        if wider > 0:
            self._move(lambda t: torch.nn.functional.pad(t, (0, 0, wider, 0)))
            self.mask = torch.nn.functional.pad(self.mask, (wider, 0))
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        more = len(joining) - len(free)
        if more > 0:
            self._move(lambda t: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, more)))
            self.mask = torch.nn.functional.pad(self.mask, (0, 0, 0, more))
            free += range(len(self.rows), len(self.rows) + more)
            self.rows += [None] * more
            self.tokens += [self.pad] * more
            self.positions += [0] * more
        width = self.mask.shape[1]
        for slot, i in zip(free, joining):
            for mine, theirs in zip(self.cache.layers, group.cache.layers):
                mine.place(slot, theirs.keys[i], theirs.values[i])
            self.mask[slot] = torch.nn.functional.pad(group.mask[i], (width - group.mask.shape[1], 0))
            self.rows[slot], self.tokens[slot] = group.rows[i], group.tokens[i]
            self.positions[slot] = int(group.mask[i].sum())

    def drop_finished(self) -> bool:
        """Free the slots of finished rows; False when no row is left. Columns no row uses any more
        are left behind. When most slots have been free for a while (not just between a reply and
        its client's next request: rows that joined together end together), the batch keeps only
        its rows (a copy)."""
        self.rows = [None if row is None or row.finished else row for row in self.rows]
        live = [slot for slot, row in enumerate(self.rows) if row is not None]
        if not live:
            return False
        self.idle_steps = self.idle_steps + 1 if len(self.rows) > 2 * len(live) else 0
        if self.idle_steps > IDLE_SLOTS_STEPS:
            self.idle_steps = 0
            index = torch.tensor(live, device=self.mask.device)
            self._move(lambda t: t[index])
            self.mask = self.mask[index]
            self.rows, self.tokens, self.positions = ([values[i] for i in live]
                                                      for values in (self.rows, self.tokens, self.positions))
            live = list(range(len(live)))
        unused = int(self.mask[live].any(dim=0).long().argmax())  # leading columns no row uses
        if unused:
            for layer in self.cache.layers:
                layer.skip(unused)
            self.mask = self.mask[:, unused:]
        return True

    def _move(self, change) -> None:
        for layer in self.cache.layers:
            layer.move(change(layer.keys), change(layer.values))


class Streaming(ABC):
    """What the app calls: ``encode``, and ``stream`` and ``generate`` over a ``start`` that queues a
    request. Subclasses have the model's ``tokenizer``."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        """The prompt's tokens, as generation reads them: a caller that checks the prompt's length
        passes them on in ``GenerationRequest.prompt_ids`` rather than have them computed again."""
        return self.tokenizer(text).input_ids

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
        config = getattr(model, "config", None)
        self._own_step_mask = (getattr(config, "_attn_implementation", None) == "sdpa"
                               and getattr(config, "sliding_window", None) is None
                               and set(getattr(config, "layer_types", None) or ()) <= {"full_attention"})
        self._waiting: deque[_Row] = deque()
        self._ready = threading.Condition()
        # The keys/values of the last prompt (or shared prompt prefix) computed, per layer, kept for the
        # next requests that start the same way: the same tools' system prompt, a conversation going on.
        # Tensors are never changed in place (caches grow by concatenation), so keeping them is safe.
        self._kept: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] = ([], [])
        self._worker = threading.Thread(target=self._work, name="generation", daemon=True)
        self._worker.start()

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
            running = batch.live() if batch else []
            room = self.max_batch_size - len(running)
            alone = bool(running) and running[0].request.seed is not None
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
                for row in (batch.live() if batch else []) + joining:
                    if not row.finished:
                        row.finished = True
                        row.send(Update("", "error"))
                batch = None
            if self._after_step:
                self._after_step()

    def _join(self, batch: _Batch | None, group: _Group) -> _Batch | None:
        if batch is None:
            batch = _Batch(group, self.tokenizer.pad_token_id)
            return batch if batch.drop_finished() else None
        batch.add(group)
        return batch

    def _prefill(self, rows: list[_Row]) -> _Group:
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
            return _Group(rows, cache, torch.ones(len(rows), shared, dtype=torch.long, device=device),
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
        tokens = self._choose(rows, logits)
        self._hand(rows, tokens)
        return _Group(rows, cache, mask, tokens)

    def _prefix_cache(self, ids: list[list[int]], reuse: bool) -> tuple[int, DynamicCache]:
        """How many first tokens all rows share whose keys/values are computed once (0 if too few to
        be worth it), and a cache holding them for every row. They are taken from the kept prefix
        when it covers them (and ``reuse``), else computed now and kept."""
        shared = _common_prefix(ids, min(len(r) for r in ids) - 1)  # each row keeps a token of its own
        cache = DynamicCache()
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
        """One token for every row of the batch (free slots compute one too, which nobody reads)."""
        device = batch.mask.device
        batch.mask = torch.nn.functional.pad(batch.mask, (0, 1), value=1)
        # One query per row: with SDPA and every layer attending to all earlier tokens, the attention
        # mask is each row's own, given as is (transformers would rebuild it from the 2D mask: 7% of a
        # step with the tiny model). Otherwise (a sliding window, other kernels) transformers builds it.
        mask = batch.mask.bool()[:, None, None, :] if self._own_step_mask else batch.mask
        logits = self.model(input_ids=torch.tensor(batch.tokens, device=device)[:, None], attention_mask=mask,
                            position_ids=torch.tensor(batch.positions, device=device)[:, None],
                            past_key_values=batch.cache, use_cache=True).logits[:, -1]
        batch.positions = [position + 1 for position in batch.positions]
        batch.tokens = self._choose(batch.rows, logits)
        self._hand(batch.rows, batch.tokens)
        return batch if batch.drop_finished() else None

    def _choose(self, rows: list[_Row | None], logits: torch.Tensor) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row is not None and row.sampler is not None:
                warpers, generator = row.sampler
                scores = warpers(None, logits[i : i + 1].float())
                tokens[i] = int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator))
        return tokens

    def _hand(self, rows: list[_Row | None], tokens: list[int]) -> None:
        """Each row takes its new token (a row whose client is gone just finishes)."""
        for row, token in zip(rows, tokens):
            if row is None:
                continue
            if row.cancelled:
                row.finished = True
            else:
                self._take(row, token)

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
