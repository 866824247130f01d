"""Helpers of the reliability tests: small runs through the real command line, run folders
compared file by file, a check that nothing half-written was left, a model slow enough to
be killed in the middle of inference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcb.constants import FEATURE_BYTES, INPUT_BYTES

REPO = Path(__file__).resolve().parents[1]
# Fields of a record that say when or how fast, not what: an interrupted run resumed later
# differs from an uninterrupted one there, and only there.
VOLATILE = frozenset(
    {
        "started",
        "finished",
        "timestamp",
        "wall_s",
        "images_per_s",
        "inferred",
        "reused",
        "host",
    }
)
BOOKKEEPING = frozenset({"manifest.json", ".pcb.lock", ".md5-cache.json"})
# The digest cache and folder listings: what a run knows of its files, not what it made.
STATE_DIR = ".pcb"


def pcb(
    *args: str | Path, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python -m pcb ...` in a fresh interpreter, as a container or a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pcb", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def kill_when(
    args: Sequence[str | Path],
    ready: Callable[[], bool],
    timeout: float = 60,
) -> subprocess.Popen:
    """Start `python -m pcb args`, SIGKILL its whole process group once `ready()` holds.

    The whole group, as `docker kill` or a power cut would: pool workers die with it.
    Returns the finished process; raises if it ended before it could be killed.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "pcb", *(str(a) for a in args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(
                f"the stage ended (status {process.returncode}) before it could be killed: "
                f"{process.stderr.read().decode() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the stage made no progress to kill it at")
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return process


def count_files(folder: Path, pattern: str = "*.bin") -> int:
    try:
        return sum(1 for _ in folder.glob(pattern))
    except OSError:
        return 0


def _normalised(path: Path, root: Path) -> bytes:
    if path.suffix != ".json":
        return path.read_bytes()
    # Records name the run folder (the model they ran); two runs differ in that alone.
    payload = json.loads(path.read_text(encoding="utf-8").replace(str(root), "<run>"))

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(payload), sort_keys=True).encode("utf-8")


def run_files(root: Path) -> dict[str, bytes]:
    """Every file of a run folder but the bookkeeping, by relative path; JSON records without
    their time and speed fields."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.name not in BOOKKEEPING and relative.parts[0] != STATE_DIR:
            files[relative.as_posix()] = _normalised(path, root)
    return files


def assert_same_run(resumed: Path, uninterrupted: Path) -> int:
    """The two folders hold the same files, byte for byte; returns how many were compared."""
    ours, theirs = run_files(resumed), run_files(uninterrupted)
    assert sorted(ours) == sorted(theirs), (
        f"only in the resumed run: {sorted(set(ours) - set(theirs))[:5]}; "
        f"only in the uninterrupted one: {sorted(set(theirs) - set(ours))[:5]}"
    )
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, f"files differ: {differing[:5]}"
    return len(ours)


def assert_nothing_half_written(root: Path, killed: bool = False) -> None:
    """Every bin and dump at its one valid size, every JSON whole; no temporary file either,
    unless the process was `killed` mid-write (SIGKILL leaves its temporary file, under a
    name no stage reads; the next run in the folder removes it)."""
    if not root.exists():
        return
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            assert killed, path
            continue
        relative = path.relative_to(root).parts
        if relative[0] == "bins" and path.suffix == ".bin":
            assert path.stat().st_size == INPUT_BYTES, path
        if relative[0] == "dumps" and path.suffix == ".bin":
            assert path.stat().st_size == FEATURE_BYTES, path
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def slow_model(path: Path, width: int = 96) -> Path:
    """The tiny model's interface with a 3x3 convolution over the whole image first: a few
    milliseconds per image, so that inference can be killed half-way."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)

    def tensor(name: str, shape: list[int]) -> Any:
        values = (rng.standard_normal(int(np.prod(shape))) * 0.1).astype(np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, shape, values.tolist())

    nodes = [
        helper.make_node("Conv", ["input_1", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[64, 128], strides=[64, 128]),
        helper.make_node("Conv", ["p1", "w2"], ["output_1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow_pcb",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 3, 384, 128])],
        [helper.make_tensor_value_info("output_1", TensorProto.FLOAT, ["N", 2048, 6, 1])],
        initializer=[tensor("w1", [width, 3, 3, 3]), tensor("w2", [2048, width, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at `path` for the test (root only); skips the test where the
    mount is not permitted (no root, or a container without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
