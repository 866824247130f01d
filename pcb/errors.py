"""The one exception type a user sees: a message saying what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable


class PcbError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits non-zero."""


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """' (did you mean X?)' naming the known names nearest to a mistyped one; '' when none is
    near. For messages that then list every known name."""
    import difflib

    text = str(name).strip()
    choices = {str(k) for k in known}
    near = difflib.get_close_matches(text, choices, n=2, cutoff=0.6)
    if not near:
        lowered = {c.lower(): c for c in choices}
        near = [lowered[m] for m in difflib.get_close_matches(text.lower(), lowered, n=2)]
    if not near:
        return ""
    return f" (did you mean {' or '.join(near)}?)"
