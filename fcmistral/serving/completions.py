"""``/v1/completions``: a plain prompt in, text out (BFCL's local-model handler and many tools call
it), its full and its streamed reply side by side."""

from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator

from openai.types import Completion

from fcmistral.serving.engine import EngineClient
from fcmistral.serving.limits import Limits, check_prompt, checked, sampling
from fcmistral.serving.protocol import CompletionRequest, dump, usage


class Completions:
    """One completion request: its prompt checked, generated whole (``full``) or streamed (``stream``)."""

    def __init__(self, request: CompletionRequest, engine: EngineClient, limits: Limits, model_name: str) -> None:
        self.request, self.engine, self.model_name = request, engine, model_name
        prompt = request.prompt_text()
        self.generation = sampling(request, limits, prompt, check_prompt(prompt, engine, limits))
        self.ident, self.created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    async def full(self) -> Completion:
        update = checked(await self.engine.generate(self.generation))
        choice = {"index": 0, "text": update.text, "finish_reason": update.finish_reason, "logprobs": None}
        return Completion(id=self.ident, object="text_completion", created=self.created, model=self.model_name,
                          usage=usage(update), choices=[choice])

    async def stream(self) -> AsyncIterator[str]:
        include_usage = bool(self.request.stream_options and self.request.stream_options.include_usage)
        async for update in self.engine.stream(self.generation):
            checked(update)
            if update.text or update.finish_reason:
                yield self._chunk(update.text, update.finish_reason)
            if update.finish_reason and include_usage:
                yield dump(Completion(id=self.ident, object="text_completion", created=self.created,
                                      model=self.model_name, choices=[], usage=usage(update)))
        yield "[DONE]"

    def _chunk(self, text: str, finish: str | None) -> str:
        # Not a Completion: its model has no finish_reason null, which every chunk but the last carries.
        return json.dumps({"id": self.ident, "object": "text_completion", "created": self.created,
                           "model": self.model_name,
                           "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]},
                          ensure_ascii=False)
