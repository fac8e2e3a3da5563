"""What one request may ask for (the server's options), and a request turned into the engine's
``GenerationRequest`` within those limits."""

from __future__ import annotations

from dataclasses import dataclass

from fcmistral.serving.engine import EngineClient, GenerationRequest, Update
from fcmistral.serving.protocol import RequestError, SamplingFields


@dataclass
class Limits:
    """What one request may ask for (the server's options)."""

    max_request_bytes: int = 1 << 20
    max_prompt_tokens: int = 8192
    max_tokens: int = 400  # the default reply length, and the most a request may ask for
    body_timeout_s: float = 30.0
    request_timeout_s: float = 600.0  # a request's whole generation (504 past it; a stream ends with an error event)
    send_timeout_s: float = 30.0  # a streamed event must be taken by the client within this
    temperature: float = 0.0  # used when a request gives none
    top_p: float = 1.0
    constrained_calls: str = "never"  # under tool_choice "auto": "never", "strict" (tools marked strict), "always"
    call_bias: float = 0.0  # added to the call marker's first logit where a reply starts (fcmistral.constraint)
    loop_penalty: float = 0.0  # DRY's multiplier inside a call (fcmistral.call_loops)
    majority_decisions: bool = False  # a call, or a second turn, only where it holds half (fcmistral.constraint)


def sampling(request: SamplingFields, limits: Limits, prompt: str, prompt_ids: list[int],
             stops: tuple[str, ...] = ()) -> GenerationRequest:
    """The engine's request: the reply's length within the limit, the server's defaults where the client gave none."""
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens or limits.max_tokens
    if max_tokens > limits.max_tokens:
        raise RequestError(f"max_tokens {max_tokens} is more than this server allows ({limits.max_tokens})",
                           param="max_tokens")
    temperature = limits.temperature if request.temperature is None else request.temperature
    return GenerationRequest(prompt, max_tokens, temperature, request.top_p or limits.top_p,
                             request.stops() + stops, request.seed, prompt_ids)


def check_prompt(prompt: str, engine: EngineClient, limits: Limits) -> list[int]:
    """The prompt's tokens, once they fit the limit. (Lone surrogates never get this far: the JSON
    parser refuses them.)"""
    ids = engine.encode(prompt)
    if len(ids) > limits.max_prompt_tokens:
        raise RequestError(f"the prompt is {len(ids)} tokens; this server allows {limits.max_prompt_tokens}",
                           param="messages", code="context_length_exceeded")
    return ids


def checked(update: Update) -> Update:
    """``update``, unless generation failed: then the request's error (503, which clients retry, when
    the engine was down or restarting; 500 when this request's own generation failed)."""
    if update.finish_reason != "error":
        return update
    if update.retryable:
        raise RequestError(update.error or "the generation engine is restarting; retry", 503, code="engine_unavailable")
    raise RequestError(update.error or "internal error while generating", 500)
