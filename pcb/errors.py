"""The one exception type a user sees: a message saying what is wrong and how to fix it."""


class PcbError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits non-zero."""
