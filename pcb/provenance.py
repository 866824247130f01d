"""Where and when a record was made, so a report merging hosts can say where each figure is from."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

# The container executor sets this to the host's name: inside a container the hostname is
# the container id, which says nothing about the machine that measured.
HOST_ENV = "PCB_HOST"


# The container executor also sets these to the host folders mounted at /results and /data, so
# that what a stage writes for people to read (the report) names the folders they know.
HOST_RESULTS_ENV = "PCB_HOST_RESULTS"
HOST_DATA_ENV = "PCB_HOST_DATA"
_MOUNTS = {"/results": HOST_RESULTS_ENV, "/data": HOST_DATA_ENV}


def host_path(path: object) -> str:
    """A path as the host sees it: /results/demo -> <host results folder>/demo inside a
    container that was told its mounts; any other path (or outside a container) as it is."""
    text = str(path)
    for target, env in _MOUNTS.items():
        host = os.environ.get(env)
        if host and (text == target or text.startswith(target + "/")):
            return host.rstrip("/") + text[len(target) :]
    return text


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp() -> dict[str, str]:
    return {"host": host_name(), "timestamp": utc_now()}
