"""Which process started a stage container, and whether that process is still there.

Every stage container is labelled with its owner: the pid of the `invoke` / `python` process
that started it, that process's start time, and the host it runs on (host name and boot id).
A container whose owner has gone is an orphan: nobody streams its output, removes it when it
ends, or stops it on Ctrl-C, and its stage keeps the run folder's lock. The next stage run
removes such containers (docker_executor), and so does `invoke clean` (lifecycle).

A pid alone would mislead: pids are reused, and a pid recorded before a reboot or on another
machine sharing the engine names some other process here. So the owner is judged dead only
when this host is the one it ran on and either the boot id changed, or no process has that
pid, or the process with that pid started at another time; a container of another host is
left alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LABEL_PID = "pcb.owner.pid"
LABEL_STARTED = "pcb.owner.started"  # /proc/<pid>/stat start time, clock ticks since boot
LABEL_HOST = "pcb.owner.host"  # <host name>/<boot id>
LABEL_STAGE = "pcb.stage"
LABEL_IMAGE = "pcb.image"
LABEL_RUN = "pcb.run"
LABEL_CHECKOUT = "pcb.checkout"

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"
PROC = Path("/proc")


def boot_id(proc: Path = PROC) -> str:
    """This boot's random id (changes at every reboot); "" where there is no /proc."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int, proc: Path = PROC) -> list[str]:
    """/proc/<pid>/stat from field 3 (the state) on; [] if there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    return stat.rsplit(")", 1)[-1].split()


def start_time(pid: int, proc: Path = PROC) -> str:
    """When process `pid` started (field 22 of /proc/<pid>/stat); "" if it is not there."""
    fields = _stat_fields(pid, proc)
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Host:
    name: str
    boot: str

    @classmethod
    def here(cls, proc: Path = PROC) -> Host:
        return cls(socket.gethostname(), boot_id(proc))

    @property
    def label(self) -> str:
        return f"{self.name}/{self.boot}"


def owner_labels(pid: int | None = None, proc: Path = PROC) -> dict[str, str]:
    """The owner labels of a container started now by process `pid` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return {
        LABEL_PID: str(pid),
        LABEL_STARTED: start_time(pid, proc),
        LABEL_HOST: Host.here(proc).label,
    }


def pid_exists(pid: int, proc: Path = PROC) -> bool:
    """A process with this pid runs (a zombie, killed but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    fields = _stat_fields(pid, proc)
    return not fields or fields[0] not in ("Z", "X")


def owner_state(labels: Mapping[str, str], host: Host | None = None, proc: Path = PROC) -> str:
    """ALIVE, DEAD, or UNKNOWN (no owner labels, or another host's container)."""
    host = host or Host.here(proc)
    pid_text, where = labels.get(LABEL_PID, ""), labels.get(LABEL_HOST, "")
    if not pid_text.isdigit() or "/" not in where:
        return UNKNOWN
    name, _, boot = where.rpartition("/")
    if name != host.name:
        return UNKNOWN
    if boot != host.boot:
        return DEAD  # started before this host's last reboot
    pid = int(pid_text)
    if not pid_exists(pid, proc):
        return DEAD
    started = labels.get(LABEL_STARTED, "")
    if started and start_time(pid, proc) not in ("", started):
        return DEAD  # the pid now belongs to a newer process
    return ALIVE


def describe_owner(labels: Mapping[str, str]) -> str:
    pid, where = labels.get(LABEL_PID), labels.get(LABEL_HOST, "")
    if not pid:
        return "no owner recorded"
    return f"owner pid {pid} on {where.rpartition('/')[0] or '?'}"
