"""The image builds the settings ask for: each image's base (the vendor images' from the CANN
version and chip, or the TensorRT image key), the build inputs (wheel folder, package index, CA
bundle), and the registry check of the bases (`invoke build --check`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ascend.cann_images import python_of, select_image
from ..ascend.chips import AUTO
from ..errors import PcbError
from ..tensorrt.image_matrix import tensorrt_image
from .settings import Settings

DEFAULT_IMAGES = ("export", "runtime")


def cann_base(settings: Settings) -> tuple[str, str]:
    """The cann image's base and its Python: pcb.cann_image as given, else the published image
    of pcb.cann_version for the chip's series (a 310P when no chip is chosen)."""
    if settings.cann_image:
        python = settings.cann_python or python_of(settings.cann_image)
        if not python:
            raise PcbError(
                f"pcb.cann_image = {settings.cann_image!r} does not say its Python (no -py3.N "
                "at the end of its tag): set pcb.cann_python to the image's python3 version"
            )
        return settings.cann_image, python
    chip = settings.chip if settings.chip and settings.chip != AUTO else "310P3"
    image = select_image(chip, settings.cann_version, settings.cann_python or None)
    return image.reference(), image.python


def vendor_bases(settings: Settings, images: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """The vendor images' bases as the settings choose them: cann by CANN version and chip,
    tensorrt by trt_image (pcb/ascend/cann_images.py, pcb/tensorrt/image_matrix.py)."""
    bases: dict[str, tuple[str, str | None]] = {}
    if "cann" in images:
        bases["cann"] = cann_base(settings)
    if "tensorrt" in images:
        image = tensorrt_image(settings.trt_image)
        bases["tensorrt"] = (image.reference, image.python)
    return bases


def build(
    settings: Settings,
    images: Sequence[str],
    force: bool = False,
    build_args: Sequence[str] = (),
    client: Any = None,
) -> list[Any]:
    """Build `images` (an image whose content tag exists is not rebuilt); prints one JSON line
    per image."""
    from . import build_inputs
    from . import images as image_builds
    from .engine import connect

    client = client or connect()
    names = list(images)
    results = image_builds.build_images(
        names,
        client=client,
        base_image=build_inputs.resolve_base_image(settings.base_image, client, names),
        wheels=build_inputs.resolve_wheels(settings.wheels),
        index_url=settings.index_url or None,
        ca_bundle=build_inputs.resolve_ca_bundle(settings.ca_bundle),
        extra_build_args={name: build_inputs.parse_build_args(build_args) for name in names},
        vendor_bases=vendor_bases(settings, names),
        force=force,
        quiet=settings.quiet,
    )
    for result in results:
        print(image_builds.describe(result))
    return results


def check_bases(settings: Settings, images: Sequence[str], client: Any = None) -> bool:
    """Each image's base: its registry digest where a registry answers, what is here; builds
    nothing. False when a digest could not be had."""
    from .engine import connect
    from .images import check_base

    client = client or connect()
    complete = True
    for name in images:
        base = vendor_bases(settings, [name]).get(name, (None, None))[0]
        result = check_base(client, name, base)
        print(result.describe())
        complete &= result.digest is not None
    return complete
