"""What a caller of the engine sees: a request, the updates of its reply, and the client interface
(``EngineClient``) that the in-process engine and the engine process both implement."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fcmistral.constraint import CallConstraint
from fcmistral.modeling import text_encoder


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
    constraint: CallConstraint | None = None  # a call grammar and call bias (fcmistral.constraint)


@dataclass
class Update:
    """A piece of a reply; the last one has ``finish_reason`` ("stop", "length", or "error" with
    ``error`` saying why: ``retryable`` when the engine was down, not the request at fault) and the counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    retryable: bool = False


class EngineClient(ABC):
    """What the app calls: ``encode``, and ``stream`` and ``generate`` over a ``start`` that queues a
    request. Subclasses have the model's ``tokenizer``."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        """The prompt's tokens, as generation reads them: a caller that checks the prompt's length
        passes them on in ``GenerationRequest.prompt_ids`` rather than have them computed again."""
        return text_encoder(self.tokenizer).encode(text).ids  # a "</s>" in a message is text, not EOS

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
