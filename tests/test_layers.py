"""The package's layers: imports point down the list and never up, no module imports itself
back through others, and only the host side imports Docker or Invoke.

Read from the source with `ast` (no module is imported): every `import` and `from ... import`,
at the top of a module or inside a function, relative ones resolved. An import guarded by
`if TYPE_CHECKING:` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pcb"
# Bottom up. A module may import its own layer and those below it.
CORE = ("pcb", "pcb.errors", "pcb.constants", "pcb.layout", "pcb.fileio", "pcb.provenance")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", CORE),
    ("record", ("pcb.record",)),
    ("backends", ("pcb.backends",)),
    ("library", ()),  # every other module of pcb/: model, checkpoint/, export, infer, ...
    ("vendor", ("pcb.ascend", "pcb.tensorrt")),
    ("report", ("pcb.report",)),
    ("cli", ("pcb.cli", "pcb.__main__")),
    ("orchestration", ("pcb.orchestration",)),
    ("bench", ("pcb.bench",)),
)
HOST_ONLY = ("docker", "invoke")  # importable only by the orchestration (and tasks.py)


def module_name(path: Path, root: Path = ROOT) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(path, root)[0]: path for path in (root / "pcb").rglob("*.py")}


MODULES = modules_of(ROOT)


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if module in CORE and prefixes == CORE:
            return rank
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "pcb"):
            return rank
    return [name for name, _ in LAYERS].index("library")


def imports(path: Path, root: Path = ROOT, modules: dict[str, Path] = MODULES) -> set[str]:
    """Every module `path` imports: pcb modules by their full name, others by their top name."""
    module, is_package = module_name(path, root)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            # `from . import x` imports the module x when there is one.
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "pcb":
                found.add(name.split(".")[0])
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules and name != module:
                found.add(name)
    return found


GRAPH = {module: imports(path) for module, path in MODULES.items()}


def test_the_graph_is_read():
    assert "pcb.cli.parser" in GRAPH["pcb.cli.main"]
    # relative, function-level imports are found too
    assert "pcb.record.manifest" in GRAPH["pcb.cli.main"]
    assert layer_of("pcb.infer") == 3 and layer_of("pcb.layout") == 0
    assert layer_of("pcb.orchestration.settings") == 7 and layer_of("pcb.cli") == 6


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in graph.items()
        for target in targets
        if target.startswith("pcb") and layer_of(target) > layer_of(module)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: any of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_points_up():
    assert upward(GRAPH) == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_checks_find_what_they_look_for():
    assert upward({"pcb.infer": {"pcb.cli.main", "pcb.layout"}}) == [
        "pcb.infer (library) imports pcb.cli.main (cli)"
    ]
    graph = {"pcb.a": {"pcb.b"}, "pcb.b": {"pcb.c"}, "pcb.c": {"pcb.a"}, "pcb.d": {"pcb.a"}}
    assert cycles(graph) == [["pcb.a", "pcb.b", "pcb.c"]]


def test_only_the_host_side_imports_docker_or_invoke():
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target in HOST_ONLY and not module.startswith("pcb.orchestration")
    )
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from ..record.digest import x\n", {"pcb.record.digest"}),
        ("def f():\n    from ..cli import parser\n", {"pcb.cli", "pcb.cli.parser"}),
        ("from . import runs\n", {"pcb.report", "pcb.report.runs"}),
        ("import docker.errors\nfrom invoke import Exit\n", {"docker", "invoke"}),
    ],
)
def test_imports_are_resolved(tmp_path: Path, source: str, found: set[str]):
    """In a module pcb/report/probe.py, relative imports resolve against pcb/report/."""
    for name in ("pcb/__init__.py", "pcb/record/__init__.py", "pcb/record/digest.py",
                 "pcb/cli/__init__.py", "pcb/cli/parser.py", "pcb/report/__init__.py",
                 "pcb/report/runs.py"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    probe = tmp_path / "pcb" / "report" / "probe.py"
    probe.write_text(source)
    assert imports(probe, tmp_path, modules_of(tmp_path)) == found
