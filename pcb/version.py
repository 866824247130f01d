"""pcb's version, as `python -m pcb --version` and `invoke version` print it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import __version__


def source_revision() -> str:
    """The git commit of this checkout ('+dirty' when it has changes), or '' where there is
    no git (an image: its revision is in its labels)."""
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def version_text() -> str:
    revision = source_revision()
    return f"pcb-bench {__version__}" + (f" (git {revision})" if revision else "")
