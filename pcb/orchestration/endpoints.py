"""Which Docker engine runs which image: the `engines` setting, and a client for each engine.

An endpoint is what the docker CLI takes: a context name (`docker context ls`), `unix://...`,
`tcp://host:2376` (TLS from DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, as the CLI reads them) or
`ssh://user@host[:port]` (the SDK runs the `ssh` binary, so keys, known hosts and jump hosts
come from the user's ssh config; the far side needs the docker CLI). `local` is the engine the
environment names (DOCKER_HOST or the default socket): every image runs there unless the
setting says otherwise. Any other endpoint is treated as a remote host: nothing of this
machine's file system is assumed there (remote_executor.py).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PcbError
from .engine import connect, short_error

LOCAL = "local"
IMAGE_FAMILIES = ("export", "runtime", "cann", "tensorrt")
_SCHEMES = ("unix://", "tcp://", "ssh://", "npipe://")
_CONTEXT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$")


@dataclass(frozen=True)
class Endpoint:
    """One engine, as the user named it."""

    text: str  # "local", a context name or a URL

    @property
    def is_local(self) -> bool:
        return self.text == LOCAL

    @property
    def is_context(self) -> bool:
        return not self.is_local and not self.text.startswith(_SCHEMES)

    def cli_prefix(self) -> str:
        """How the docker CLI is pointed at it: `docker --context NAME` or
        `DOCKER_HOST=URL docker`."""
        if self.is_local:
            return "docker"
        if self.is_context:
            return f"docker --context {shlex.quote(self.text)}"
        return f"DOCKER_HOST={shlex.quote(self.text)} docker"

    def __str__(self) -> str:
        return self.text


def parse_endpoint(text: str) -> Endpoint:
    value = str(text).strip()
    if not value:
        raise PcbError("an empty engine endpoint: give local, a context name or a URL")
    if value.startswith(_SCHEMES) or value == LOCAL or _CONTEXT_NAME.match(value):
        if value.startswith("ssh://") and "@" not in value:
            # The SDK passes no user: ssh would log in as the local user, rarely meant.
            raise PcbError(f"engine {value}: name the remote user, e.g. ssh://user@host")
        return Endpoint(value)
    raise PcbError(
        f"engine {value!r}: expected local, a Docker context name (`docker context ls`), "
        "unix:///path, tcp://host:port or ssh://user@host[:port]"
    )


def parse_engines(value: Any) -> tuple[tuple[str, str], ...]:
    """The `engines` setting: a mapping image -> endpoint (invoke.yaml), or `IMAGE=ENDPOINT`
    items (--engine, repeatable or comma-separated); a bare ENDPOINT stands for every image.
    Returned sorted, as (image, endpoint) pairs, `local` ones left out."""
    if value is None or value == "" or value == []:
        return ()
    items: Iterable[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    else:
        parts = [value] if isinstance(value, str) else list(value)
        pairs = []
        for part in parts:
            for item in str(part).split(","):
                item = item.strip()
                if not item:
                    continue
                name, sep, endpoint = item.partition("=")
                if sep and name in IMAGE_FAMILIES:
                    pairs.append((name, endpoint))
                elif sep and not name.startswith(_SCHEMES):
                    raise PcbError(
                        f"engine {item!r}: {name!r} is no image; expected one of "
                        f"{', '.join(IMAGE_FAMILIES)} (e.g. runtime=ssh://user@npu-host)"
                    )
                else:
                    pairs += [(family, item) for family in IMAGE_FAMILIES]
        items = pairs
    engines: dict[str, str] = {}
    for name, endpoint in items:
        if name not in IMAGE_FAMILIES:
            raise PcbError(
                f"engines: {name!r} is no image; expected one of {', '.join(IMAGE_FAMILIES)}"
            )
        engines[name] = parse_endpoint(str(endpoint)).text
    return tuple(sorted((k, v) for k, v in engines.items() if v != LOCAL))


def engine_for(engines: Iterable[tuple[str, str]], image: str) -> Endpoint:
    return Endpoint(dict(engines).get(image, LOCAL))


def _quiet_ssh_close() -> None:
    """docker-py's ssh transport, closing a connection whose ssh process has ended already,
    writes to its closed stdin and raises BrokenPipeError (docker/docker-py#3218, open); from a
    connection dropped by the pool that is one "Exception ignored" traceback per request on
    stderr. The connection is gone either way: let closing it be quiet."""
    from docker.transport import sshconn

    close = sshconn.SSHSocket.close
    if getattr(close, "_pcb_quiet", False):
        return

    def quiet_close(self: Any) -> None:
        try:
            close(self)
        except BrokenPipeError:
            if self.proc is not None:
                self.proc.terminate()

    quiet_close._pcb_quiet = True  # type: ignore[attr-defined]
    sshconn.SSHSocket.close = quiet_close  # type: ignore[method-assign]


def client_for(endpoint: Endpoint, stage: str = "", timeout: int = 120) -> Any:
    """A docker.DockerClient for the endpoint, checked with a ping; PcbError naming the engine
    (and the stage that needed it) with what to check when it does not answer."""
    if endpoint.is_local:
        return connect(timeout=timeout)
    from docker.errors import DockerException

    import docker

    who = f" (for stage {stage})" if stage else ""
    try:
        if endpoint.is_context:
            from docker.context import ContextAPI

            context = ContextAPI.get_context(endpoint.text)
            if context is None:
                raise PcbError(
                    f"no Docker context named {endpoint.text}{who}: `docker context ls` lists "
                    f"them; `docker context create {endpoint.text} --docker host=ssh://user@host`"
                    " makes one"
                )
            base_url, tls = context.Host, context.TLSConfig
        else:
            base_url, tls = endpoint.text, None
            if base_url.startswith("tcp://"):
                environment = {**os.environ, "DOCKER_HOST": base_url}
                tls = docker.utils.kwargs_from_env(environment=environment).get("tls")
        if str(base_url).startswith("ssh://"):
            _quiet_ssh_close()
        client = docker.DockerClient(
            base_url=base_url,
            tls=tls or False,
            timeout=timeout,
            use_ssh_client=str(base_url).startswith("ssh://"),
        )
        client.ping()
    except PcbError:
        raise
    except (DockerException, OSError) as error:
        raise PcbError(
            f"cannot reach the Docker engine {endpoint}{who}: {short_error(error)}. "
            f"{_hint(endpoint)}"
        ) from None
    return client


def _hint(endpoint: Endpoint) -> str:
    text = endpoint.text
    if text.startswith("ssh://"):
        from urllib.parse import urlsplit

        url = urlsplit(text)
        port = f"-p {url.port} " if url.port else ""
        return (
            f"Check that `ssh {port}{url.username}@{url.hostname} docker version` works "
            "from this machine without a password prompt (key in ssh-agent or ~/.ssh/config, "
            "host in known_hosts) and that the remote user may use its engine (docker group)."
        )
    if text.startswith("tcp://"):
        return (
            "Check the host and port, and for TLS that DOCKER_CERT_PATH holds ca.pem, cert.pem "
            "and key.pem and DOCKER_TLS_VERIFY=1 is set (`docker -H ... version` should work)."
        )
    if text.startswith("unix://"):
        return "Check that the engine runs and that you may use its socket."
    return f"`{endpoint.cli_prefix()} version` should work first."
