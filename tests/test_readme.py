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


def test_the_hand_written_docker_run_line_has_the_flags_of_print_docker(tmp_path, monkeypatch):
    """The section "Running one stage's container by hand" shows what `invoke preprocess --demo
    --print-docker` prints: the same options in the same order, the same values but for the
    host-specific ones (the user, the memory figure, the host's name)."""
    import shlex

    from pcb.orchestration.argv import stage_call
    from pcb.orchestration.docker_executor import container_spec
    from pcb.orchestration.settings import settings_from_config

    section = README.split("### Running one stage's container by hand", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.+?)\n```", section, flags=re.DOTALL)
    readme = shlex.split(block.replace("\\\n", " "))
    monkeypatch.chdir(tmp_path)  # data/ and results/ as the tasks see them
    call = stage_call("preprocess", settings_from_config({}, demo=True))
    printed = container_spec(call, uid=1000, gid=1000).docker_run_argv()

    def options(argv: list[str]) -> list[str]:
        head = argv[: argv.index("pcb-runtime:latest")]
        # -e: the README shows HOME only, --print-docker every variable.
        return [
            w
            for i, w in enumerate(head)
            if w.startswith("-") and (w != "-e" or i == head.index("-e"))
        ]

    assert options(readme) == options(printed)
    for flag in ("--cap-drop", "--security-opt", "--network", "--pids-limit", "-w"):
        assert readme[readme.index(flag) + 1] == printed[printed.index(flag) + 1], flag
    assert readme[readme.index("--memory") + 1] == readme[readme.index("--memory-swap") + 1]
    tail = readme[readme.index("pcb-runtime:latest") :]
    assert printed[printed.index("pcb-runtime:latest") :][: len(tail)] == tail
