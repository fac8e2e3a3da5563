"""Domain errors: what a user's input or files got wrong, said in one line.

Library code raises these; only the command-line runner (fcmistral.cli) turns them into an
``error: ...`` line and exit code 2, and the server into a 4xx reply.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of a library's error message (its type's name when the message is empty),
    to quote inside a UserError."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]
