"""An offline Debian base image: debootstrap a root file system and `docker import` it.

For hosts that reach no container registry (air-gapped machines, this project's CI): the
`export` and `runtime` images build FROM it through their BASE_IMAGE build argument. Only a
Debian package mirror is needed (or a local one, `mirror=`).

The tag is derived from the recipe (suite, variant, packages, mirror), so asking twice for the
same recipe finds the image already there and does nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PcbError

BASE_REPOSITORY = "pcb-base"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Debian's own python3 (3.11 on bookworm): the venv the images build on top of needs
# python3-venv (ensurepip); ca-certificates for pip at build time; libgomp1 for OpenMP wheels.
DEFAULT_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1")
DEFAULT_CACHE_DIR = Path("/var/cache/pcb-debootstrap")
# Trimmed from the root file system before the import: caches and docs no program reads.
_TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


@dataclass(frozen=True)
class BaseRecipe:
    """What goes into the offline base; its hash names the image."""

    suite: str = DEFAULT_SUITE
    variant: str = "minbase"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    mirror: str = DEFAULT_MIRROR
    changes: tuple[str, ...] = field(
        default=(
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
        )
    )

    def digest(self) -> str:
        text = json.dumps(
            [self.suite, self.variant, sorted(self.packages), self.mirror, list(self.changes)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        """e.g. pcb-base:bookworm-1a2b3c4d5e6f"""
        return f"{BASE_REPOSITORY}:{self.suite}-{self.digest()}"


@dataclass(frozen=True)
class BaseImageResult:
    tag: str
    image_id: str
    created: bool  # False: it was already there
    debootstrap_s: float = 0.0
    import_s: float = 0.0


def debootstrap_command(
    recipe: BaseRecipe, target: Path, cache_dir: Path | None = None
) -> list[str]:
    """The debootstrap command line for a recipe (pure; tested without running it)."""
    command = ["debootstrap", f"--variant={recipe.variant}"]
    if recipe.packages:
        command.append("--include=" + ",".join(recipe.packages))
    if cache_dir is not None:
        command.append(f"--cache-dir={cache_dir}")
    command += [recipe.suite, str(target), recipe.mirror]
    return command


def _check_host() -> None:
    if shutil.which("debootstrap") is None:
        raise PcbError(
            "debootstrap is not installed: `sudo apt-get install debootstrap` "
            "(or run `sudo bash scripts/setup-docker`, which installs it)"
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise PcbError(
            "debootstrap needs root to build the offline base image: run the task with sudo, "
            "or build from a registry base instead (the default BASE_IMAGE of the Dockerfiles)"
        )


def _trim(root: Path) -> None:
    for relative in _TRIM:
        folder = root / relative
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def ensure_base_image(
    client: Any = None,
    recipe: BaseRecipe = BaseRecipe(),
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workdir: Path | None = None,
    force: bool = False,
    quiet: bool = False,
) -> BaseImageResult:
    """Make the offline base image if it is not there yet; return its tag.

    `client` is a docker.DockerClient (default: one from the environment, checked). The root
    file system is built in a temporary folder under `workdir` (default: the system temp
    folder) and removed afterwards; debootstrap's package cache is kept in `cache_dir`, so a
    second base with the same packages downloads nothing.
    """
    from .engine import connect

    client = client or connect()
    from docker.errors import ImageNotFound

    if not force:
        try:
            image = client.images.get(recipe.tag)
        except ImageNotFound:
            pass
        else:
            if not quiet:
                print(f"base image {recipe.tag} already there ({image.short_id})")
            return BaseImageResult(recipe.tag, image.id, created=False)

    _check_host()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pcb-base-", dir=workdir) as tmp:
        root = Path(tmp) / "rootfs"
        command = debootstrap_command(recipe, root, cache_dir)
        if not quiet:
            print("+ " + " ".join(command), flush=True)
        start = time.monotonic()
        result = subprocess.run(
            command,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            check=False,
        )
        debootstrap_s = time.monotonic() - start
        if result.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            hint = f" (its log: {log})" if log.exists() else ""
            raise PcbError(
                f"debootstrap of Debian {recipe.suite} failed with exit status "
                f"{result.returncode}{hint}: check that the mirror {recipe.mirror} answers, "
                "or pass a reachable one (mirror=...)"
            )
        _trim(root)
        archive = Path(tmp) / "rootfs.tar"
        start = time.monotonic()
        # GNU tar keeps numeric owners, device nodes and hard links as they are.
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(archive), "."],
            check=True,
        )
        shutil.rmtree(root)
        repository, tag = recipe.tag.split(":", 1)
        changes = list(recipe.changes) + [
            f"LABEL org.opencontainers.image.title={repository}",
            f"LABEL org.opencontainers.image.base.name=debian:{recipe.suite}",
            f"LABEL org.opencontainers.image.created={_now()}",
            f"LABEL pcb.base.recipe={recipe.digest()}",
        ]
        # From a path: the SDK sends the file with its length (its stream mode sends a
        # malformed chunked body that the engine rejects).
        client.api.import_image(src=str(archive), repository=repository, tag=tag, changes=changes)
        import_s = time.monotonic() - start
    image = client.images.get(recipe.tag)
    if not quiet:
        size_mb = image.attrs.get("Size", 0) / 1e6
        print(
            f"base image {recipe.tag} ({image.short_id}, {size_mb:.0f} MB): "
            f"debootstrap {debootstrap_s:.0f} s, import {import_s:.0f} s",
            file=sys.stdout,
        )
    return BaseImageResult(recipe.tag, image.id, True, debootstrap_s, import_s)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
