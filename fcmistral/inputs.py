"""Reading users' text files (data, functions, evaluation sets) so that a bad byte is reported
with its line and column, as one error line, instead of a UnicodeDecodeError traceback."""

from __future__ import annotations

from pathlib import Path

from fcmistral.errors import UserError


def utf8_problem(data: bytes) -> str | None:
    """Where ``data`` stops being UTF-8 ("line 3 is not UTF-8 text (byte 0xff at column 7)"), or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return f"line {line} is not UTF-8 text (byte {data[err.start]:#04x} at column {column})"
    return None


def read_utf8(path: str | Path, what: str) -> str:
    """The text of a user's file; a missing file or a non-UTF-8 byte is a UserError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    data = path.read_bytes()
    problem = utf8_problem(data)
    if problem:
        raise UserError(f"{what} {str(path)!r}: {problem}")
    return data.decode("utf-8")
