"""The scripted model the server tests run behind the real engine: replies written in advance, one
character per token (tests/serving/conftest.py serves it)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Callable

import torch
from transformers import BatchEncoding

from fcmistral.demo.functions import DEMO_SCHEMAS
from fcmistral.prompt import ASSISTANT_TAG, END_OF_TURN, format_call

EOS, PAD = 0, 1
REPLY = 1024  # the scripted model writes character c as token ord(c) + 2 + REPLY; prompts are ord(c) + 2
TOOLS = [{"type": "function", "function": schema} for schema in DEMO_SCHEMAS]
LOOP = 40  # the "o"s of the looping call


class CharTokenizer:
    """One token per character; enough of a tokenizer for the engine (and its own text encoder:
    see ``char_text_encoder``)."""

    eos_token_id, pad_token_id = EOS, PAD

    def __call__(self, text: str) -> BatchEncoding:
        return BatchEncoding({"input_ids": [ord(c) + 2 for c in text]})

    def encode(self, text: str) -> SimpleNamespace:  # as tokenizers.Tokenizer.encode
        return SimpleNamespace(ids=self(text).input_ids)

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr((i - 2) % REPLY) for i in ids if i > PAD)


class ScriptedModel:
    """A model whose forward pass writes ``reply(prompt)``, a character per step, for each row.

    It keeps each row's tokens in its key/value cache (one "key" per token) and reads them back
    through the attention mask, so the engine's cache handling (rows joining and leaving, padding,
    the kept prompt prefix) decides what every row sees: a row whose cache got mixed up with
    another's, or misaligned with its mask, answers wrongly. Its own tokens are told from the
    prompt's by their range (``REPLY``). Logits favour the scripted character by 4, so greedy
    decoding follows the script and sampling at temperature 1.5 mostly does not; the reply's range
    by 1 over the prompt's, so a row whose scripted character a call grammar masks writes another
    character of its own (the lowest the grammar allows) rather than one the model reads as prompt."""

    device = torch.device("cpu")
    vocab_size = 2 * REPLY

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply, self.prompts, self.batches = reply, [], []
        self.engine = None  # the engine serving it (set by the serve fixture; rows_submitted wraps its submit)
        self.hold: Callable[[], None] | None = None  # called first in each pass (a test's gate: held_together)

    def __call__(self, input_ids, past_key_values, attention_mask=None, **_):
        if self.hold is not None:
            self.hold()
        tokens = input_ids[:, None, :, None].double()
        keys, _ = past_key_values.update(tokens, tokens, 0)
        mask = attention_mask if attention_mask is not None else torch.ones(keys.shape[0], keys.shape[2])
        assert mask.shape == (keys.shape[0], keys.shape[2]), "the mask covers the cache"
        logits = torch.zeros(input_ids.shape[0], 1, 2 * REPLY)
        logits[:, :, REPLY:] = 1.0
        self.batches.append([])  # each forward pass: the prompts of its rows
        for row, (history, used) in enumerate(zip(keys[:, 0, :, 0].long().tolist(), mask.tolist())):
            history = [token for token, real in zip(history, used) if real]
            prompt = CharTokenizer().decode([t for t in history if t < REPLY])
            self.batches[-1].append(prompt)
            written = sum(t >= REPLY for t in history)
            if written == 0 and attention_mask is not None:  # (without a mask: a shared prefix, not a prompt)
                self.prompts.append(prompt)
            script = self.reply(prompt)
            logits[row, 0, ord(script[written]) + 2 + REPLY if written < len(script) else EOS] = 4.0
        return SimpleNamespace(logits=logits)


def weather(**arguments) -> str:
    return format_call("get_current_weather", arguments or {"location": "Paris", "unit": "celsius"})


def reply_after(prompt: str) -> str:
    """The scripted model: what it writes depends on the end of the prompt (see each test)."""
    if ASSISTANT_TAG not in prompt:  # a shared prompt prefix computed apart: its logits are never read
        return ""
    if prompt.endswith(END_OF_TURN):  # the peek after a text turn: hand back to the user
        return "\n\n\nASSISTANT:" if "acknowledge" in prompt else "\n\n\nUSER:"
    last_user = prompt.rsplit("USER: ", 1)[-1]
    forced = prompt[prompt.rindex(ASSISTANT_TAG) + len(ASSISTANT_TAG):]
    if forced:  # tool_choice wrote the start of the call (a place name looping on "o" when asked to loop)
        whole = weather(location="O" + "o" * LOOP if last_user.startswith("loop") else "Oslo", unit="celsius")
        return whole[len(forced.lstrip()):] + " " + END_OF_TURN
    if "FUNCTION RESPONSE:" in last_user and '"error"' in last_user:
        return " " + weather(location="Rome", unit="celsius") + " " + END_OF_TURN  # the retry
    if last_user.startswith("acknowledge"):  # a text turn, then (after the peek) a call turn
        return " " + weather() + " " + END_OF_TURN if "Let me check." in last_user else " Let me check. " + END_OF_TURN
    if last_user.startswith("parallel"):  # two calls in one turn (prompt.py's parallel convention)
        return " " + weather() + "\n" + weather(location="Rome", unit="celsius") + " " + END_OF_TURN
    if last_user.startswith("call "):
        return " " + last_user.split("\n")[0][5:] + " " + END_OF_TURN
    return " It is 18 degrees in Paris. \n" + END_OF_TURN + "\n\n\nUSER: more"


def rows_submitted(model: ScriptedModel) -> list:
    """The engine's rows (fcmistral.serving.engine.rows.Row) for the requests submitted from now on,
    in order: the engine serving the scripted model records each as it is submitted."""
    rows, submit = [], model.engine.submit

    def recorded(*args, **kwargs):
        row = submit(*args, **kwargs)
        rows.append(row)
        return row

    model.engine.submit = recorded
    return rows


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen after ``timeout_s`` (a
    bound for a machine however busy, not a timing the test measures)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.005)


def held_together(model: ScriptedModel, requests: int) -> None:
    """Hold the scripted model's next forward pass until ``requests`` requests have been submitted to
    its engine, so that clients started together are in the engine together however the machine
    schedules their threads: on a busy machine one request once finished before the next arrived,
    and a test of rows sharing passes failed with nothing wrong in the engine. Counted at submission,
    not from the pass's rows: rows that join together may first share a one-row prefix pass. Held at
    most 30 s, then the pass goes on (the test's assertion says what did not happen)."""
    released, submitted = threading.Event(), rows_submitted(model)

    def hold() -> None:
        deadline = time.monotonic() + 30
        while not released.is_set() and len(submitted) < requests and time.monotonic() < deadline:
            time.sleep(0.005)
        released.set()

    model.hold = hold
