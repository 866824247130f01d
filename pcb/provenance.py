"""Where and when a record was made, so a report merging hosts can say where each figure is from."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

# The container executor sets this to the host's name: inside a container the hostname is
# the container id, which says nothing about the machine that measured.
HOST_ENV = "PCB_HOST"


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp() -> dict[str, str]:
    return {"host": host_name(), "timestamp": utc_now()}
