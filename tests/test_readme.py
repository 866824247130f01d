"""The README stays true: its two commands are what CI runs, its tasks exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_ci_runs_the_readme_commands_as_written():
    commands = quick_start_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in commands:
        assert command in ci.splitlines()


def test_every_invoke_task_named_exists():
    spec = importlib.util.spec_from_file_location("project_tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    known = {
        name.replace("_", "-")
        for name, value in vars(tasks).items()
        if type(value).__name__ == "Task"
    }
    named = set(re.findall(r"invoke ([a-z][a-z-]+)", README))
    assert named <= known, named - known
