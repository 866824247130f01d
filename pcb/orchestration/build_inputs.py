"""What an image build uses, resolved from the settings and the host's pip configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import PcbError
from .images import IMAGES, check_base_available

AUTO = "auto"
OFFLINE = "offline"


def resolve_base_image(setting: str, client: Any, images: list[str]) -> str | None:
    """The base for the export/runtime builds; None means each Dockerfile's pinned default.

    "auto": the pinned default when it is here or can be pulled, else the Debian base that
    `invoke base-image` makes without a registry. "offline": that Debian base. Otherwise the
    image named.
    """
    offline_capable = [name for name in images if IMAGES[name].offline_base]
    if not offline_capable:
        return None
    if setting == OFFLINE:
        return _offline_base(client)
    if setting != AUTO:
        return setting or None
    default = IMAGES[offline_capable[0]].default_base
    try:
        check_base_available(client, default, offline_capable[0])
        return None
    except PcbError:
        print(
            f"note: {default} cannot be pulled here; building FROM the offline Debian base "
            "instead (set pcb.base_image in invoke.yaml to choose)",
            file=sys.stderr,
        )
        return _offline_base(client)


def _offline_base(client: Any) -> str:
    from .base_image import ensure_base_image

    return ensure_base_image(client).tag


def pip_config_find_links() -> str:
    """find-links from the host pip's configuration files (pip config list), '' if none."""
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    links = []
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            links.append(value.strip().strip("'\""))
    return " ".join(links)


def _named_path(
    setting: str, exists: Callable[[Path], bool], what: str, key: str, kind: str
) -> Path:
    path = Path(setting)
    if not exists(path):
        raise PcbError(f"{what} {path} does not exist: set pcb.{key} to a {kind}")
    return path


def resolve_wheels(
    setting: str, environ: Mapping[str, str] = os.environ, config_links: str | None = None
) -> Path | None:
    """A local wheel folder for the builds: the setting, else the host pip's find-links
    (PIP_FIND_LINKS, else its configuration files) when that is a local folder, so a host
    whose pip finds torch there builds the images the same way."""
    if setting:
        return _named_path(setting, Path.is_dir, "wheels folder", "wheels", "folder")
    links = environ.get("PIP_FIND_LINKS", "")
    if not links:
        links = pip_config_find_links() if config_links is None else config_links
    for entry in links.split():
        path = Path(entry.removeprefix("file://"))
        if path.is_absolute() and path.is_dir():
            return path
    return None


def resolve_ca_bundle(setting: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The CA bundle pip needs inside builds: the setting, else the host pip's PIP_CERT."""
    if setting:
        return _named_path(setting, Path.is_file, "CA bundle", "ca_bundle", "PEM file")
    cert = environ.get("PIP_CERT", "")
    return Path(cert) if cert and Path(cert).is_file() else None


def parse_build_args(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """["NAME=VALUE", ...] -> {NAME: VALUE}; a malformed item is refused with the form."""
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not name.replace("_", "").isalnum():
            raise PcbError(f"build argument {item!r}: expected NAME=VALUE, e.g. ASCEND_GID=1001")
        parsed[name] = value
    return parsed
