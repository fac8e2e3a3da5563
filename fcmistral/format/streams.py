"""Replies read as they grow: the one rule for releasing text while it is generated.

Text is released only when it can no longer become one of the reply's markers (the call marker,
the end marker, a client's stop strings): a marker's first characters are held back until the next
ones say whether a marker begins there. The engine (stop strings), the server (text before a call),
the terminal chat (the end marker) and the vLLM plugin (text, then each call once complete) all read
their replies with ``ReplyStream``.
"""

from __future__ import annotations

from fcmistral.format.calls import CallParseError, parse_payload, split_reply
from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER, FunctionCall


def partial_marker_length(text: str, markers: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could be the start of one of ``markers``: text a
    stream must hold back until the next characters say whether a marker begins there."""
    longest = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:k]):
                longest = k
                break
    return longest


class ReplyStream:
    """A reply given whole each time it grows; ``feed`` returns the text newly safe to release. The
    reply ends at the first whole marker (``ended`` says which). ``strip``: the reply's leading
    spaces are dropped and its trailing spaces held back (they may end the reply)."""

    def __init__(self, markers: tuple[str, ...], strip: bool = False) -> None:
        self.markers, self.strip = markers, strip
        self.released = 0  # characters released (of the reply without its leading spaces, with ``strip``)
        self.ended: str | None = None

    def feed(self, text: str, final: bool = False) -> str:
        """The new releasable text of ``text``, the whole reply so far; ``final``: nothing more
        comes, so nothing is held back."""
        if self.strip:
            text = text.lstrip()
        # No marker starts before what was released (its start would have been held back), so the
        # search starts there: each feed costs the new text, not the whole reply (a reply fed token
        # by token was quadratic in its length).
        start = max(0, self.released - max(map(len, self.markers), default=0))
        found = [(i, marker) for marker in self.markers if (i := text.find(marker, start)) >= 0]
        if found:
            end, self.ended = min(found)
        elif final:
            end = len(text)
        else:  # \ufffd: the first bytes of a character that the next token completes
            end = len(text) - max(partial_marker_length(text, self.markers), int(text.endswith("\ufffd")))
        if self.strip:  # trailing spaces held back (found from the end: no copy of the reply)
            while end > self.released and text[end - 1].isspace():
                end -= 1
        new = text[self.released:end] if end > self.released else ""
        self.released = max(self.released, end)
        return new


class CallStream:
    """Reads a reply as it grows: what can be shown as text (before the first call marker, holding
    back what may become a marker), and each call as soon as it is complete (its text parses, which
    for the glaive call is at its closing ``'}``). It reads one turn, up to the end marker, where
    engines stop. For streaming engines (the vLLM plugin)."""

    def __init__(self) -> None:
        self.text = ReplyStream((FUNCTION_CALL_MARKER, END_OF_TURN))
        self.calls_sent = 0

    def feed(self, text: str) -> tuple[str, list[FunctionCall]]:
        """The new text and the newly complete calls, given the whole reply so far."""
        end = text.find(END_OF_TURN)
        before, payloads = split_reply(text if end < 0 else text[:end])
        new_text = self.text.feed(before, final=bool(payloads))
        calls = []
        for payload in payloads[self.calls_sent:]:
            try:
                calls.append(parse_payload(payload))
            except CallParseError:  # not complete yet (or never: then it is never sent)
                break
        self.calls_sent += len(calls)
        return new_text, calls
