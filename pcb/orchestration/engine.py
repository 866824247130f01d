"""The Docker engine: a client for the one the environment names, checked with a ping."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import PcbError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The three ways an engine does not answer, each with its own fix (engine_problem).
NOT_INSTALLED = (
    "Docker is not installed on this machine: install the Docker Engine "
    "(https://docs.docker.com/engine/install/; as root on Debian, `bash scripts/setup-docker` "
    "installs and starts it), or run the stages on this host with --local."
)
NOT_RUNNING = (
    "the Docker engine is not running: start it with `sudo systemctl start docker` (as root on "
    "a machine without systemd, `bash scripts/setup-docker`), or run the stages on this host "
    "with --local."
)
NO_PERMISSION = (
    "the Docker engine runs, but you may not use it: add yourself to the docker group (`sudo "
    "usermod -aG docker $USER`, then log in again), run the task with sudo, or run the stages "
    "on this host with --local."
)
ENGINE_DOCS = "https://docs.docker.com/engine/install/"


def _socket_path(where: str) -> Path | None:
    return Path(where[len("unix://") :]) if where.startswith("unix://") else None


def engine_problem(where: str, error_text: str, docker_cli: str | None = None) -> str:
    """Which of not installed, not running or no permission keeps the engine at `where` (a
    DOCKER_HOST) from answering, with its fix. The SDK's error says it in words that vary with
    its version (PermissionError(13, ...), 'Connection refused', 'No such file'), so the
    socket file and the docker program are looked at too."""
    socket = _socket_path(where)
    text = error_text.lower()
    if "permission denied" in text or "errno 13" in text or "(13," in text:
        return NO_PERMISSION
    if socket is not None and socket.exists() and not os.access(socket, os.R_OK | os.W_OK):
        return NO_PERMISSION
    installed = docker_cli if docker_cli is not None else shutil.which("docker") or shutil.which(
        "dockerd"
    )
    if socket is not None and not socket.exists() and not installed:
        return NOT_INSTALLED
    if socket is None:  # tcp:// or ssh://: another machine's engine
        return (
            f"the engine at {where} does not answer: check that it runs there and that "
            "DOCKER_HOST names it, or unset DOCKER_HOST for this machine's engine."
        )
    return NOT_RUNNING


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
            f"cannot reach the Docker engine at {where}: "
            f"{engine_problem(where, str(error))} ({short_error(error)})"
        ) from None
    return client


def short_error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
