"""The executor of a task: this host's (docker_executor.executor_for), with the calls of each
image the `engines` setting sends elsewhere on a RemoteExecutor for that engine."""

from __future__ import annotations

from pathlib import Path

from . import docker_executor
from .endpoints import Endpoint
from .executors import EngineRouter, Executor
from .remote_executor import RemoteExecutor
from .settings import Settings


def executor_for(settings: Settings, host_root: Path = Path("/")) -> Executor:
    """Each stage where the settings say: `executor: local` on this host; else in its container,
    on the engine its image is set to by `engines` (this host's by default)."""
    here = docker_executor.executor_for(settings, host_root)
    if settings.executor == "local" or not settings.engines:
        return here
    # One executor per engine: its client, and what it sent, are shared by its images.
    by_endpoint = {
        endpoint: RemoteExecutor.for_settings(settings, Endpoint(endpoint))
        for endpoint in {endpoint for _, endpoint in settings.engines}
    }
    image_for = getattr(here, "image_for", None)
    for remote in by_endpoint.values():
        remote.local_image = image_for
    return EngineRouter(here, {image: by_endpoint[e] for image, e in settings.engines})
