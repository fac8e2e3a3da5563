"""The terminal chat's completions: a Hugging Face model's reply, printed as it is generated."""

from __future__ import annotations

from fcmistral.constraint import CallConstraint
from fcmistral.format.streams import ReplyStream
from fcmistral.generation import generate_batch
from fcmistral.prompt import END_OF_TURN
from fcmistral.turns import peek_constraint


class EndMarkerStreamer:
    """Prints generated text as it comes, stopping at `` <|endoftext|>`` (never printed; text that
    could be its start is held back until it is known not to be: ``ReplyStream``)."""

    def __init__(self, tokenizer, write=None) -> None:
        from transformers import TextStreamer

        self._inner = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._inner.on_finalized_text = self._on_text
        self._write = write or (lambda text: print(text, end="", flush=True))
        self._text, self._reply = "", ReplyStream((" " + END_OF_TURN, END_OF_TURN))

    def put(self, value) -> None:
        self._inner.put(value)

    def end(self) -> None:
        self._inner.end()

    def _on_text(self, text: str, stream_end: bool = False) -> None:
        if self._reply.ended is None:
            self._text += text
            self._write(self._reply.feed(self._text, final=stream_end))


class Completer:
    """``Complete`` (see fcmistral.serving.chat) over a Hugging Face model."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 400, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, stream_prefix: str = "",
                 constraint: CallConstraint | None = None) -> None:
        self.model, self.tokenizer, self.stream_prefix, self.constraint = model, tokenizer, stream_prefix, constraint
        self.peek_constraint = peek_constraint(constraint)
        self.options = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature,
                        "top_p": top_p}

    def __call__(self, prompt: str, max_new_tokens: int | None = None, stream: bool = False,
                 guided: bool = True) -> str:
        options = dict(self.options, max_new_tokens=max_new_tokens or self.options["max_new_tokens"])
        streamer = None
        if stream:  # the prefix (the role tag the prompt ends with) goes before the streamed reply
            print(self.stream_prefix, end="", flush=True)
            streamer = EndMarkerStreamer(self.tokenizer)
        (reply,) = generate_batch(self.model, self.tokenizer, [prompt], streamer=streamer,
                                  constraints=[self.constraint if guided else self.peek_constraint], **options)
        if stream:
            print(flush=True)
        return reply
