"""ReplyStream: text released as a reply grows never holds a piece of a marker, and adds up to the
text before the first marker however the reply is split."""

from __future__ import annotations

import pytest

from fcmistral.format.streams import ReplyStream
from fcmistral.prompt import END_OF_TURN, FUNCTION_CALL_MARKER

ENDS = (" " + END_OF_TURN, END_OF_TURN)


@pytest.mark.parametrize("reply, markers, strip, expected, ended", [
    ("It is 18 degrees. " + END_OF_TURN + " junk", ENDS, False, "It is 18 degrees.", " " + END_OF_TURN),
    ("Use < and <| freely", ENDS, False, "Use < and <| freely", None),
    ("  Sure, let me check.  " + FUNCTION_CALL_MARKER + ' {"name"', (FUNCTION_CALL_MARKER,), True,
     "Sure, let me check.", FUNCTION_CALL_MARKER),
    ("Stop here\nnot here", ("\n",), False, "Stop here", "\n"),
])
def test_released_text_adds_up_to_the_text_before_the_first_marker(reply, markers, strip, expected, ended):
    for step in (1, 2, 3, 7):
        stream, pieces = ReplyStream(markers, strip), []
        for end in range(step, len(reply) + step, step):
            text = reply[:end]
            pieces.append(stream.feed(text, final=end >= len(reply)))
            released = "".join(pieces)
            assert not any(marker in released for marker in markers)
            if stream.ended is None and end < len(reply):  # what is held back may still start a marker
                held = (text.lstrip() if strip else text)[len(released):]
                assert not held.strip() or any(m.startswith(held.lstrip() if strip else held) for m in markers)
        assert "".join(pieces) == expected and stream.ended == ended


def test_a_partial_marker_is_held_back_until_the_next_characters_decide():
    stream = ReplyStream(ENDS)
    assert stream.feed("Done <|endof") == "Done"
    assert stream.feed("Done <|endofwhat") == " <|endofwhat"
    assert stream.feed("Done <|endofwhat\ufffd") == ""  # a character's first bytes
    assert stream.feed("Done <|endofwhat\ufffd", final=True) == "\ufffd"


def test_each_feed_searches_only_the_new_text():
    """A reply fed token by token was searched from its start at every token (quadratic in its
    length): the search for markers starts where the released text ends."""
    from fcmistral.format.streams import ReplyStream

    starts = []

    class Text(str):
        def find(self, sub, start=0, *rest):
            starts.append(start)
            return str.find(self, sub, start, *rest)

    stream, reply = ReplyStream(("<functioncall>", "<|endoftext|>")), "word " * 2000
    for end in range(100, len(reply), 100):
        stream.feed(Text(reply[:end]))
    assert stream.released > 9000 and min(starts[-2:]) >= stream.released - len("<functioncall>") - 100
