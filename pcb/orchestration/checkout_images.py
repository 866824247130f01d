"""Which image a stage container runs: the content tag this checkout's sources build
(images.content_tag), never `pcb-<name>:latest`, which every checkout on the host shares, so a
build in another checkout would change what this one runs. `:latest` stays a convenience alias
for people typing `docker run` by hand."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from ..errors import PcbError
from .settings import Settings


def settings_bases(settings: Settings) -> tuple[str, ...]:
    """The bases the settings name besides each image's default (pcb.base_image when it names
    an image; the cann and tensorrt images' vendor bases)."""
    from .builds import vendor_bases

    bases = [] if settings.base_image in ("auto", "offline", "") else [settings.base_image]
    # A chip without a published CANN image: its stages say so when they run.
    with contextlib.suppress(PcbError):
        bases += [base for base, _ in vendor_bases(settings, ["cann", "tensorrt"]).values()]
    return tuple(bases)


def checkout_image(client: Any, name: str, bases: Iterable[str] = ()) -> str | None:
    """The content tag of pcb-<name> that this checkout's sources build and that is on this
    engine (the newest, when images from several bases are: the last one built); None when
    none is."""
    from docker.errors import ImageNotFound

    from .lifecycle import current_tags

    found = []
    for tag in current_tags(client, [name], bases):
        try:
            image = client.images.get(tag)
        except ImageNotFound:
            continue
        found.append((str((image.attrs or {}).get("Created", "")), tag))
    return max(found)[1] if found else None


def not_built_message(name: str) -> str:
    return (
        f"no pcb-{name} image built from this checkout's sources is on this machine (a "
        f"pcb-{name}:latest from another checkout or older sources is not used): build it with "
        f"`invoke build --image {name}`, or run `invoke full`, which builds what it needs"
    )
