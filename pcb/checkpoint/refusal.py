"""Why a checkpoint was refused, before the path is put in front of it for the user."""

from __future__ import annotations


def clip(text: str, limit: int = 120) -> str:
    """One line of at most `limit` characters: messages quote names taken from the file."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Refused(Exception):
    """The file is refused; str() is one line saying why, without the path."""


class RefusedGlobal(Refused):
    """The pickle names a class or function outside the allow-list; str() is its name."""


class NotAModel(Refused):
    """A well-formed checkpoint of something else; str() says what it holds."""


class Unreadable(Refused):
    """Truncated, corrupt or not a checkpoint at all; str() says what was wrong where."""
