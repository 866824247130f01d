"""A stage container lives no longer than the process that started it.

- While a container runs, SIGINT, SIGTERM and SIGHUP stop and remove it: `SignalGuard` turns
  the signal into an exception in the main thread, the executor passes the signal on to the
  container, waits briefly, removes it, and the process exits with 128 + the signal number
  (`StageSignalled`).
- SIGKILL cannot be caught: the container is left running, labelled with its owner
  (owner.py). The next stage run removes the orphans of this checkout before it starts
  (`remove_orphans`), which also frees the run folder's lock that the orphan's stage held.
- `clean` (`invoke clean`) removes orphaned and stopped pcb containers and stale pcb images.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from .owner import (
    ALIVE,
    DEAD,
    LABEL_CHECKOUT,
    LABEL_PID,
    LABEL_RUN,
    LABEL_STAGE,
    Host,
    describe_owner,
    owner_state,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A stopped container that no pcb process owns is left for this long before `clean` takes it:
# an older pcb (without owner labels) removes its own a moment after it stops.
UNOWNED_GRACE_S = 60.0


# ---- signals ---------------------------------------------------------------------------------


class Signalled(BaseException):
    """Raised in the main thread by SignalGuard's handler (a BaseException, so that no
    `except Exception` on the way swallows it)."""

    def __init__(self, signo: int) -> None:
        super().__init__(signo)
        self.signo = signo


class StageSignalled(SystemExit):
    """The run was stopped by a signal: exit status 128 + its number."""

    def __init__(self, stage: str, signo: int) -> None:
        super().__init__(128 + signo)
        self.stage = stage
        self.signo = signo

    @property
    def message(self) -> str:
        return (
            f"stage {self.stage or '?'} stopped by {signal.Signals(self.signo).name}: its "
            f"container was stopped and removed (exit status {128 + self.signo})"
        )


class SignalGuard:
    """`with SignalGuard() as guard:` SIGINT/SIGTERM/SIGHUP raise Signalled while armed, and are
    only recorded once disarmed (cleaning up must not be interrupted); the previous handlers
    come back on exit. A signal the process ignores (nohup) is left ignored. Outside the main
    thread, where Python allows no handlers, it does nothing."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signo: int | None = None
        self.armed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signo: int, frame: FrameType | None) -> None:
        first = self.signo is None
        if first:
            self.signo = signo
        if first and self.armed:
            self.armed = False
            raise Signalled(signo)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signo in self.signals:
                # An ignored signal stays ignored: `nohup invoke ...` must outlive its terminal.
                if signal.getsignal(signo) is not signal.SIG_IGN:
                    self._previous[signo] = signal.signal(signo, self._handle)
            self.armed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.armed = False
        for signo, previous in self._previous.items():
            # None: the previous handler was not set from Python; the default is the closest.
            signal.signal(signo, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


# ---- orphans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """A pcb container found on the engine, and what to do with it."""

    id: str
    name: str
    status: str  # created, running, exited, ...
    labels: dict[str, str]
    remove: bool
    reason: str

    def describe(self) -> str:
        stage = self.labels.get(LABEL_STAGE, "?")
        run = self.labels.get(LABEL_RUN) or "-"
        name = self.name or self.id[:12]
        return f"{name} (stage {stage}, run {run}, {self.status}): {self.reason}"


def labelled_containers(client: Any, label: str, *, all: bool = True) -> list[Any]:  # noqa: A002
    """The engine's containers with `label`, each inspected. Listed sparse, then inspected one
    by one, skipping any removed in between: docker-py's full listing inspects them itself and
    raises NotFound for one that a finishing stage removed meanwhile (a 404 seen in CI)."""
    from docker.errors import NotFound

    found = []
    for container in client.containers.list(all=all, sparse=True, filters={"label": label}):
        try:
            container.reload()
        except NotFound:
            continue
        found.append(container)
    return found


def _status(container: Any) -> str:
    return str(getattr(container, "status", "") or container.attrs.get("State", {}).get("Status"))


def _stopped_for(container: Any, now: datetime) -> float | None:
    """Seconds since a container stopped (or was created, if it never started); None while it
    runs or when the engine does not say."""
    state = container.attrs.get("State", {}) or {}
    if state.get("Running") or state.get("Paused") or state.get("Restarting"):
        return None
    stamp = state.get("FinishedAt") or ""
    if not stamp or stamp.startswith("0001-"):
        stamp = container.attrs.get("Created") or ""
    try:
        # Docker writes UTC with nanoseconds, which datetime does not read: whole seconds do.
        when = datetime.fromisoformat(stamp.partition(".")[0].rstrip("Z"))
    except ValueError:
        return None
    return (now - when.replace(tzinfo=timezone.utc)).total_seconds()


def judge(container: Any, host: Host, now: datetime) -> Leftover:
    """Whether `clean` removes a pcb container: yes when its owner is gone, or when nobody owns
    it (no owner labels: an older pcb's) and it stopped over a minute ago; never when its owner
    is alive, or on another host, or when it runs without an owner label."""
    labels = dict(container.labels or {})
    status = _status(container)
    state = owner_state(labels, host)
    owner = describe_owner(labels)
    if state == DEAD:
        remove, reason = True, f"its {owner} has gone"
    elif state == ALIVE:
        remove, reason = False, f"kept: its {owner} is running"
    elif LABEL_PID in labels:
        remove, reason = False, f"kept: {owner}, another host"
    else:
        stopped = _stopped_for(container, now)
        if stopped is not None and stopped >= UNOWNED_GRACE_S:
            remove, reason = True, f"stopped {stopped:.0f} s ago, no owner recorded"
        else:
            remove = False
            reason = "kept: no owner recorded and " + (
                "still running (remove it with `docker rm -f` if it is yours)"
                if stopped is None
                else "stopped under a minute ago"
            )
    return Leftover(container.id, container.name or "", status, labels, remove, reason)


def _remove(container: Any) -> bool:
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        return True  # gone already
    except APIError as error:
        if "already in progress" in str(error):
            return True
        print(f"warning: could not remove container {container.id[:12]}: {error}", file=sys.stderr)
        return False
    return True


def remove_orphans(
    client: Any,
    checkout: Path | str,
    log: Callable[[str], None] | None = None,
    host: Host | None = None,
) -> list[Leftover]:
    """Remove this checkout's containers whose owner has gone (stopping their stage frees the
    run folder's lock it held); one line each to stderr. Returns what was removed."""
    host = host or Host.here()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    removed = []
    for container in labelled_containers(client, f"{LABEL_CHECKOUT}={checkout}"):
        if owner_state(container.labels or {}, host) != DEAD:
            continue
        leftover = judge(container, host, _now())
        if _remove(container):
            removed.append(leftover)
            log(f"removed orphaned container {leftover.describe()}")
    return removed


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---- invoke clean ----------------------------------------------------------------------------


@dataclass
class CleanReport:
    removed_containers: list[Leftover] = field(default_factory=list)
    kept_containers: list[Leftover] = field(default_factory=list)
    removed_images: list[str] = field(default_factory=list)
    kept_images: list[str] = field(default_factory=list)  # stale, but in use: why
    dry_run: bool = False

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} container {c.describe()}" for c in self.removed_containers]
        out += [f"left container {c.describe()}" for c in self.kept_containers]
        out += [f"{verb} image {reference}" for reference in self.removed_images]
        out += [f"left image {line}" for line in self.kept_images]
        if not self.removed_containers and not self.removed_images:
            out.append("nothing to clean")
        return out


def clean_containers(
    client: Any, checkout: Path | str, dry_run: bool = False, host: Host | None = None
) -> tuple[list[Leftover], list[Leftover]]:
    """(removed, kept) among this checkout's stage containers and those of older pcb versions
    (no checkout label): see judge()."""
    host = host or Host.here()
    now = _now()
    seen: dict[str, Any] = {}
    for container in labelled_containers(client, LABEL_STAGE):
        labels = container.labels or {}
        if labels.get(LABEL_CHECKOUT, str(checkout)) == str(checkout):
            seen[container.id] = container
    removed, kept = [], []
    for container in seen.values():
        leftover = judge(container, host, now)
        if leftover.remove and (dry_run or _remove(container)):
            removed.append(leftover)
        else:
            kept.append(leftover)
    return removed, kept


def current_tags(client: Any, names: Iterable[str], bases: Iterable[str] = ()) -> set[str]:
    """The content tags this checkout builds, for every base it could build them from here:
    each image's default base, the offline Debian bases (pcb-base:*) and `bases`."""
    from .images import IMAGES, base_image_id, content_tag

    offline = [image.id for image in client.images.list(name="pcb-base")]
    tags = set()
    for name in names:
        image = IMAGES[name]
        candidates = {base_image_id(client, image.default_base)}
        candidates |= {base_image_id(client, base) for base in bases if base}
        if image.offline_base:
            candidates |= set(offline)
        tags |= {content_tag(name, base) for base in candidates}
    return tags


def stale_images(
    client: Any, names: Sequence[str] | None = None, bases: Iterable[str] = ()
) -> list[str]:
    """The reference (tag, or id when untagged) of every pcb-<name> image that is neither what
    pcb-<name>:latest points at nor a content tag of this checkout's sources; plus untagged
    images that a later build of the same tag replaced. The bases (pcb-base, vendor images)
    are never included."""
    from docker.errors import ImageNotFound

    from .images import IMAGES, LABEL_IMAGE, LATEST

    names = list(names or IMAGES)
    keep_tags = current_tags(client, names, bases)
    found = []
    for name in names:
        repository = IMAGES[name].repository
        try:
            latest = client.images.get(f"{repository}:{LATEST}").id
        except ImageNotFound:
            latest = None
        for image in client.images.list(name=repository):
            if image.id == latest:
                continue
            for reference in image.tags:
                if reference.startswith(f"{repository}:") and reference not in keep_tags:
                    found.append(reference)
    for image in client.images.list(filters={"dangling": True, "label": LABEL_IMAGE}):
        if (image.labels or {}).get(LABEL_IMAGE) in names:
            found.append(image.id)
    return found


def clean_images(
    client: Any, dry_run: bool = False, bases: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """(removed references, kept "reference: why") of stale_images(); an image a container
    still uses is kept."""
    from docker.errors import APIError, ImageNotFound

    removed, kept = [], []
    for reference in stale_images(client, bases=bases):
        if dry_run:
            removed.append(reference)
            continue
        try:
            client.images.remove(reference, noprune=False)
        except ImageNotFound:
            continue
        except APIError as error:
            kept.append(f"{reference}: {error.explanation or error}")
            continue
        removed.append(reference)
    return removed, kept


def clean(
    client: Any,
    checkout: Path | str,
    dry_run: bool = False,
    images: bool = True,
    bases: Iterable[str] = (),
) -> CleanReport:
    """Containers first (a removed container frees its image), then images."""
    report = CleanReport(dry_run=dry_run)
    report.removed_containers, report.kept_containers = clean_containers(client, checkout, dry_run)
    if images:
        report.removed_images, report.kept_images = clean_images(client, dry_run, bases)
    return report
