"""Platforms in parallel: after the shared head, the chains of a plan (pipeline.split_plan)
run at the same time, each in a thread, when they are on different Docker engines; then the
tail. Chains on one engine run one after the other, as `invoke full` always did: they would
share its CPU, NPU or GPU and only contend.

What the threads share, and how:

- the run folder. A stage in a container here takes the folder's lock itself (a record lock,
  per process); this process must never hold it then, or the stage is refused. So one
  `RunGate` per run folder, a threading lock: a stage here runs holding it, and a remote
  engine's stage holds it (and the record lock) only while it sends its inputs and while it
  fetches its outputs and merges its manifest entries, not while it computes there. The
  remote chain's compute overlaps the local chain's; the folder never has two writers.
- one remote engine: its executor runs one stage at a time (remote_executor).
- the terminal: every line a chain's thread prints (its stage lines, its containers' logs,
  its transfer lines) goes out whole, prefixed with `[platform@engine]`.

The first chain to fail stops the others: no further stage starts, and the containers this
process owns on every engine the chains use are killed (their stages then fail, their
containers are removed as always). Ctrl-C, SIGTERM and SIGHUP do the same. The error names the
chain, its engine and the stage; a re-run continues where the manifest says the run stopped.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..record.folder_locks import folder_lock
from ..record.runlock import RunLock
from .executors import runs_here
from .pipeline import Chain, Plan
from .stage import StageCall

# ---- the run folder between threads ------------------------------------------------------------


class RunGate:
    """One run folder's writers in this process, one at a time (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = folder_lock("writers", self.root)

    @contextmanager
    def local(self) -> Iterator[None]:
        """A stage here: its own process takes the folder's record lock."""
        with self._lock:
            yield

    @contextmanager
    def held(self, stage: str) -> Iterator[None]:
        """This process writes the folder (a remote stage's transfers): the record lock too,
        so that another pcb process is refused, as it would be by a stage here."""
        with self._lock, RunLock(self.root, stage):
            yield


# ---- the terminal between threads --------------------------------------------------------------


class _Lines:
    """A text / bytes stream that writes each thread's output whole lines at a time, prefixed
    with the thread's label (none for a thread without one, e.g. the main thread)."""

    def __init__(self, target: Any, labels: dict[int, str], lock: threading.Lock) -> None:
        self._target, self._labels, self._lock = target, labels, lock
        self._pending: dict[int, str] = {}
        self.buffer = _Bytes(self)

    def write(self, text: str) -> int:
        ident = threading.get_ident()
        label = self._labels.get(ident)
        if label is None:
            with self._lock:
                self._target.write(text)
            return len(text)
        pending = self._pending.get(ident, "") + text
        out = []
        while True:
            cut = min((i for i in (pending.find("\n"), pending.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            out.append(f"[{label}] {pending[: cut + 1]}")
            pending = pending[cut + 1 :]
        self._pending[ident] = pending
        if out:
            with self._lock:
                self._target.write("".join(out))
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        ident = threading.get_ident()
        label = self._labels.get(ident)
        # A labelled thread's partial line waits for its end (`finish`): never half a line.
        if label is None:
            with self._lock:
                self._target.flush()

    def finish(self, ident: int) -> None:
        rest = self._pending.pop(ident, "")
        if rest:
            with self._lock:
                self._target.write(f"[{self._labels.get(ident, '?')}] {rest}\n")
                self._target.flush()

    def isatty(self) -> bool:
        return False  # interleaved chains: no cursor tricks

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._target, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _Bytes(io.RawIOBase):
    """The bytes side (a container's log stream) of a `_Lines`."""

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._lines.write(bytes(data).decode("utf-8", errors="replace"))
        return len(data)

    def flush(self) -> None:
        self._lines.flush()


@contextmanager
def prefixed_output(labels: dict[int, str]) -> Iterator[tuple[_Lines, _Lines]]:
    """sys.stdout and sys.stderr, each line of a labelled thread prefixed, while inside."""
    lock = threading.Lock()
    out = _Lines(sys.stdout, labels, lock)
    err = _Lines(sys.stderr, labels, lock)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


# ---- the chains --------------------------------------------------------------------------------


@dataclass
class StageTime:
    """When a stage of a chain ran (seconds on this process's monotonic clock)."""

    chain: str
    stage: str
    engine: str
    started: float
    finished: float | None = None


@dataclass
class Group:
    """The chains that run one after the other in one thread: those on one engine."""

    engine: str
    chains: list[Chain]

    @property
    def label(self) -> str:
        return f"{'+'.join(c.name for c in self.chains)}@{self.engine}"

    @property
    def calls(self) -> list[StageCall]:
        return [call for chain in self.chains for call in chain.calls]


@dataclass
class Outcome:
    """What the parallel part did: per group its error (None: it finished), and the times."""

    errors: dict[str, BaseException] = field(default_factory=dict)
    times: list[StageTime] = field(default_factory=list)
    first: str | None = None  # the group that failed first


def engine_of(executor: Any, call: StageCall) -> str:
    """The endpoint a call runs on (`local` for this host's engine or this host)."""
    remote = getattr(executor, "remote", None)
    if remote and call.image in remote:
        return str(remote[call.image].endpoint)
    return "local"


def group_chains(plan: Plan, executor: Any) -> list[Group]:
    """The plan's chains by engine: a chain's engine is that of its first call (the platform's
    own image: the Ascend tools', TensorRT's, onnxruntime's); chains on one engine share a
    group, in the plan's order."""
    groups: dict[str, Group] = {}
    for chain in plan.chains:
        engine = engine_of(executor, chain.calls[0])
        groups.setdefault(engine, Group(engine, [])).chains.append(chain)
    return list(groups.values())


class Stopped(PcbError):
    """A chain's stage was not started, or was stopped, because another chain failed."""


def run_groups(
    groups: Sequence[Group],
    executor: Any,
    stop_containers: Callable[[], None],
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Each group in its thread, its calls in order; the first failure stops the rest
    (`stop_containers` kills what this process runs on the engines). Returns when every
    thread has ended; KeyboardInterrupt and the stop signals stop them too, then re-raise."""
    from .lifecycle import SignalGuard, Signalled, StageSignalled

    outcome = Outcome()
    stop = threading.Event()
    guard_lock = threading.Lock()
    labels: dict[int, str] = {}
    # The main thread waits on these, never in Thread.join while a signal can interrupt it: a
    # join interrupted by a raising signal handler marks a running thread as ended (CPython
    # 3.11, python/cpython#90882), so a later join returned while the chain still ran.
    ended = {group.label: threading.Event() for group in groups}

    def fail(group: Group, error: BaseException) -> None:
        with guard_lock:
            outcome.errors[group.label] = error
            first = outcome.first is None and not isinstance(error, Stopped)
            if first:
                outcome.first = group.label
        if first:
            stop.set()
            stop_containers()

    def work(group: Group) -> None:
        labels[threading.get_ident()] = group.label
        try:
            for chain in group.chains:
                for call in chain.calls:
                    if stop.is_set():
                        raise Stopped(f"{call.stage} not started: another chain failed")
                    record = StageTime(chain.name, call.stage, engine_of(executor, call), clock())
                    outcome.times.append(record)
                    try:
                        run_one(executor, call)
                    except BaseException as error:
                        if stop.is_set() and outcome.first != group.label:
                            raise Stopped(f"{call.stage} stopped: another chain failed") from error
                        raise PcbError(
                            f"chain {chain.name} on {record.engine}, stage {call.stage}: {error}"
                        ) from error
                    finally:
                        record.finished = clock()
        except BaseException as error:  # a thread's error is the run's: handed to the caller
            fail(group, error)
        finally:  # a last line without its newline still goes out, prefixed
            for stream in (sys.stdout, sys.stderr):
                finish = getattr(stream, "finish", None)
                if finish is not None:
                    finish(threading.get_ident())
            ended[group.label].set()

    threads = [threading.Thread(target=work, args=(g,), name=g.label) for g in groups]
    with prefixed_output(labels), SignalGuard() as guard:
        try:
            for thread in threads:
                thread.start()
            last_stop: float | None = None
            while not all(event.is_set() for event in ended.values()):
                for event in ended.values():
                    event.wait(timeout=0.2)
                if stop.is_set():
                    # A container created just as the first stop went out: stopped too, 2 s on.
                    if last_stop is None:
                        last_stop = clock()
                    elif clock() - last_stop > 2.0:
                        last_stop = clock()
                        stop_containers()
        except (KeyboardInterrupt, Signalled) as interrupt:
            guard.armed = False
            stop.set()
            stop_containers()
            for thread in threads:
                if thread.ident is not None:  # started, so it sets its event as it ends
                    ended[thread.name].wait()
            print(
                "pcb: stopped: every chain's containers were stopped and removed; the same "
                "command continues where the run stopped",
                file=sys.stderr,
                flush=True,
            )
            if isinstance(interrupt, Signalled):
                raise StageSignalled("the parallel chains", interrupt.signo) from None
            raise
        finally:
            for thread in threads:  # each has set its event: only its last steps are left
                if thread.ident is not None:
                    thread.join()
    return outcome


def run_one(executor: Any, call: StageCall) -> None:
    """One call of a chain: a stage here holds the run folder's gate for its whole run; a
    remote engine's stage takes it itself around its transfers."""
    run = call.run_dir()
    if run is None or not runs_here(executor, call):
        executor.run(call)
        return
    with RunGate(run).local():
        executor.run(call)


def failure_message(outcome: Outcome) -> str:
    """The run's error: the chain that failed first, then what became of the others."""
    first = outcome.first or next(iter(outcome.errors))
    lines = [str(outcome.errors[first])]
    for label, error in outcome.errors.items():
        if label != first:
            lines.append(f"  [{label}] stopped: {str(error).splitlines()[0]}")
    lines.append("A re-run continues where the run stopped: stages recorded complete are skipped.")
    return "\n".join(lines)


def overlap_s(times: Sequence[StageTime]) -> float:
    """How long two or more chains had a stage running at the same moment (0: never): each
    moment counted once, however many chains ran then."""
    events = sorted(
        (moment, step, t.chain)
        for t in times
        if t.finished is not None
        for moment, step in ((t.started, 1), (t.finished, -1))
    )  # at one moment an end (-1) sorts before a start: touching stages do not overlap
    running: dict[str, int] = {}
    total, last = 0.0, 0.0
    for moment, step, chain in events:
        if sum(1 for count in running.values() if count > 0) >= 2:
            total += moment - last
        running[chain] = running.get(chain, 0) + step
        last = moment
    return total


def timing_lines(outcome: Outcome) -> list[str]:
    """Each stage of the parallel part with its engine and when it ran, relative to the first."""
    if not outcome.times:
        return []
    zero = min(t.started for t in outcome.times)
    lines = [
        f"    {t.chain}@{t.engine} {t.stage}: {t.started - zero:.1f}-"
        + (f"{t.finished - zero:.1f} s" if t.finished is not None else "(not ended)")
        for t in sorted(outcome.times, key=lambda t: t.started)
    ]
    return [f"==> the chains ran together for {overlap_s(outcome.times):.1f} s:", *lines]
