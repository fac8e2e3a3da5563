"""Generation for the server: continuous batching, so requests are generated together.

A worker thread owns the model and runs one batch of rows, a token per row per step. Between two
steps, requests that arrived join the batch: their prompts are computed (prefill) and their
key/value caches written into free slots of the batch's cache, each row's columns ending where the
batch's do (a shorter row is padded in front; the attention mask hides the padding and each row
keeps its own positions, so a row computes what it would alone). A finished row frees its slot at
once. Clients that send a new request as soon as they get a reply keep the batch full instead of
waiting for the slowest row of a batch to end. The cache is not copied when rows come and go (see
``slots.SlotLayer``): with 32 rows those copies had cost more than the steps.

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

A request with a ``seed`` is batched like any other: its seed decides its random draws, but, as
with OpenAI's ``seed``, its reply is repeatable at best effort only: a row's logits can differ in
the last bits with the rows beside it. (Running seeded requests alone, as this engine once did,
let any client make every other wait for the batch to drain.)

Admission is bounded: at most ``max_batch_size`` rows, and at most ``max_prefill_tokens`` prompt
tokens joining in one step (one prompt longer than that joins alone), so a burst of long prompts
cannot stall the running rows for one huge prefill.

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
from collections import deque
from typing import Callable

import torch

from fcmistral.constraint import RowGuide, guides_for
from fcmistral.decode_step import DecodeStep, attends_all_with_sdpa
from fcmistral.serving.engine.client import EngineClient, GenerationRequest, Update
from fcmistral.serving.engine.prefix_cache import PrefixCache
from fcmistral.serving.engine.rows import Row, choose, fail, sampler, take
from fcmistral.serving.engine.slots import Batch, Group

log = logging.getLogger(__name__)


class BatchingEngine(EngineClient):
    """Generates for many callers with one model (see the module docstring)."""

    idle_beat_s = 1.0  # with nothing to do, the worker still calls after_step this often (a heartbeat)

    def __init__(self, model, tokenizer, max_batch_size: int = 32,
                 after_step: Callable[[], None] | None = None, max_prefill_tokens: int = 16384,
                 setup: Callable[[], None] | None = None) -> None:
        self.model, self.tokenizer, self.max_batch_size = model, tokenizer, max_batch_size
        # Called first in the generation thread, the one that runs the model (torch's thread pool is
        # per thread: see engine/threads.py); if it raises, the thread ends there (alive() is False).
        self._setup = setup
        self.max_prefill_tokens = max_prefill_tokens  # prompt tokens that join in one step (one long prompt may pass it)
        # Called in the generation thread after each step, and when idle every idle_beat_s: the engine
        # process sends the step's updates then, or a heartbeat.
        self._after_step = after_step
        self._own_step_mask = attends_all_with_sdpa(getattr(model, "config", None))
        # A prepacked Llama/Mistral model on a CPU: its decode step without transformers' forward
        # (fcmistral.decode_step: the same logits, less Python); else the model's forward.
        self._decode = DecodeStep.for_model(model) if self._own_step_mask else None
        self._waiting: deque[Row] = deque()
        self._ready = threading.Condition()
        self._prefixes = PrefixCache(model)
        self._guides = guides_for(model, tokenizer)
        self._closing = False
        self._worker = threading.Thread(target=self._work, name="generation", daemon=True)
        self._worker.start()

    def alive(self) -> bool:
        return self._worker.is_alive()

    def close(self) -> None:
        """Stop the generation thread once its current step is done (waiting rows get no reply). An
        engine used in-process is closed before the interpreter exits: a daemon thread still inside
        torch then can abort the process at exit ("terminate called without an active exception")."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._worker.join()

    def submit(self, request: GenerationRequest, streamed: bool, send: Callable[[Update], None]) -> Row:
        """Queue a request whose updates go to ``send``, called in the generation thread."""
        row = Row(request, send, streamed=streamed, guide=self._guide(request))
        with self._ready:
            self._waiting.append(row)
            self._ready.notify()
        return row

    def _guide(self, request: GenerationRequest) -> RowGuide | None:
        """The row's guide, its grammar compiled here, in the caller's thread, not the generation
        thread (a new tool set's grammar would stall every row). A grammar xgrammar cannot compile
        leaves the row unconstrained: its calls are still checked before they are returned."""
        try:
            return self._guides.guide(request.constraint)
        except Exception:  # noqa: BLE001 - logged; the request goes on as it would without the option
            log.warning("the call grammar could not be compiled; the reply is not constrained", exc_info=True)
            return None

    def start(self, request: GenerationRequest, streamed: bool, updates: asyncio.Queue) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        row = self.submit(request, streamed, lambda update: loop.call_soon_threadsafe(updates.put_nowait, update))
        return lambda: setattr(row, "cancelled", True)

    def _arrivals(self, batch: Batch | None) -> list[Row]:
        """The waiting rows that may join ``batch`` now, in arrival order (waits for one when there
        is no batch, at most ``idle_beat_s`` at a time): as many as there are free slots and as the
        step's prefill budget allows (the first always joins, so a long prompt is never starved)."""
        with self._ready:
            if batch is None and not self._waiting:
                self._ready.wait(self.idle_beat_s)
            joining: list[Row] = []
            room = self.max_batch_size - (len(batch.live()) if batch else 0)
            prefill = 0
            while self._waiting and len(joining) < room:
                row = self._waiting[0]
                if row.cancelled:
                    self._waiting.popleft()
                    continue
                size = len(row.request.prompt_ids) if row.request.prompt_ids is not None else len(row.request.prompt)
                if joining and prefill + size > self.max_prefill_tokens:
                    break
                prefill += size
                joining.append(self._waiting.popleft())
        return joining

    def _work(self) -> None:
        if self._setup is not None:
            self._setup()
        batch: Batch | None = None
        while not self._closing:
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
                    fail(row)
                batch = None
            if self._after_step:
                self._after_step()

    def _join(self, batch: Batch | None, group: Group) -> Batch | None:
        if batch is None:
            batch = Batch(group, self.tokenizer.pad_token_id)
            return batch if batch.drop_finished() else None
        batch.add(group)
        return batch

    def _prefill(self, rows: list[Row]) -> Group:
        """Compute the joining rows' prompts; each row takes its first token."""
        ids = [row.request.prompt_ids if row.request.prompt_ids is not None else self.encode(row.request.prompt)
               for row in rows]
        for row, row_ids in zip(rows, ids):
            row.prompt_tokens = len(row_ids)
            row.sampler = sampler(row.request, self.model.device)
        shared, cache = self._prefixes.shared(ids)
        pad, device = self.tokenizer.pad_token_id, self.model.device
        if shared and all(len(r) == shared + 1 for r in ids):
            # Only each prompt's last token is left (a prompt seen before): it is fed to the model with
            # the batch's next step, as a reply's last token is, rather than by a forward of its own.
            return Group(rows, cache, torch.ones(len(rows), shared, dtype=torch.long, device=device),
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
            self._prefixes.keep(ids[0], cache)
        tokens = choose(rows, logits)
        self._hand(rows, tokens)
        return Group(rows, cache, mask, tokens)

    def _step(self, batch: Batch) -> Batch | None:
        """One token for every row of the batch (free slots compute one too, which nobody reads)."""
        device = batch.mask.device
        batch.mask = torch.nn.functional.pad(batch.mask, (0, 1), value=1)
        # One query per row: with SDPA and every layer attending to all earlier tokens, the attention
        # mask is each row's own, given as is (transformers would rebuild it from the 2D mask: 7% of a
        # step with the tiny model). Otherwise (a sliding window, other kernels) transformers builds it.
        mask = batch.mask.bool()[:, None, None, :] if self._own_step_mask else batch.mask
        tokens = torch.tensor(batch.tokens, device=device)[:, None]
        positions = torch.tensor(batch.positions, device=device)[:, None]
        if self._decode is not None:
            logits = self._decode(tokens, positions, mask, batch.cache)
        else:
            logits = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                past_key_values=batch.cache, use_cache=True).logits[:, -1]
        batch.positions = [position + 1 for position in batch.positions]
        batch.tokens = choose(batch.rows, logits)
        self._hand(batch.rows, batch.tokens)
        return batch if batch.drop_finished() else None

    def _hand(self, rows: list[Row | None], tokens: list[int]) -> None:
        """Each row takes its new token (a row whose client is gone just finishes)."""
        for row, token in zip(rows, tokens):
            if row is None or row.finished:  # (a row whose sampling failed has ended already)
                continue
            if row.cancelled:
                row.finished = True
            else:
                take(row, token, self.tokenizer)
