"""The Docker engine: a client for the one the environment names, checked with a ping."""

from __future__ import annotations

import os
from typing import Any

from ..errors import PcbError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_ENGINE_HINT = (
    "Start it: `sudo systemctl start docker` (or, as root on a machine without systemd, "
    "`bash scripts/setup-docker`, which installs and starts it); if it runs but you may not use "
    "it, add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in "
    "again). Or run the stage on this host with --local."
)


def connect(timeout: int = 60) -> Any:
    """A docker.DockerClient for the engine named by the environment (DOCKER_HOST or the
    default socket), checked with a ping; PcbError with the fix when it does not answer."""
    try:
        from docker.errors import DockerException

        import docker
    except ImportError:
        raise PcbError(
            "the Docker SDK for Python is not installed: `pip install -e .[orchestrate]` "
            "(or `pip install docker`)"
        ) from None
    where = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as error:
        raise PcbError(
            f"cannot reach the Docker engine at {where}: {short_error(error)}. {START_ENGINE_HINT}"
        ) from None
    return client


def short_error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
