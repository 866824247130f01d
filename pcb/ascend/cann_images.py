"""The published CANN toolkit images the cann image builds on, chosen by chip and CANN version.

Source of every tag: the repository that builds and publishes them, Ascend/cann-container-image
(snapshot of commit c5a67b3a747bb8d69c828516d24a25ad5def4bb9, 2026-07-07): a `cann/<tag>/`
folder with its Dockerfile, the tag listed in `cann_publish_version.json`, and the workflow
`.github/workflows/build_and_push_cann.yml` pushing each tag, for x86_64 and aarch64, to
docker.io/ascendai/cann and quay.io/ascend/cann. Its README and OVERVIEW.md name the tag format
`<cann-version>-<chip-series>-<os>-<python-version>` and the hardware: Atlas 310P (300I Pro,
300V Pro), Atlas 910 / A2 (910B), A3. There is no tag for the Ascend 310 or the 310B (the 310
family's first chip and the Atlas 200I A2 board): no such folder exists there, so those chips
need a toolkit image the user names (`cann_image`).

Not in the table on purpose: alpha / beta tags, openEuler variants (the same toolkit; name
one with `cann_image`), and `latest`, which moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PcbError
from .chips import normalize_chip

SOURCE_REPOSITORY = "Ascend/cann-container-image"
SOURCE_COMMIT = "c5a67b3a747bb8d69c828516d24a25ad5def4bb9"
REGISTRIES = ("ascendai/cann", "quay.io/ascend/cann")
DEFAULT_REGISTRY = REGISTRIES[0]
DEFAULT_VERSION = "8.5.2"
# aclruntime (ais_bench's compiled part) is published as wheels up to cp311 (msit's
# benchmark install.sh refuses newer Pythons), so a version offering several takes 3.11.
PREFERRED_PYTHON = "3.11"
_TAG = re.compile(r"-py(?P<python>3\.\d+)(?:-devel)?$")


@dataclass(frozen=True)
class CannImage:
    version: str  # CANN version as the tag spells it: 8.5.2, 8.3.rc2
    chip: str  # chip series of the tag: 310p, 910b
    os: str
    python: str

    @property
    def tag(self) -> str:
        return f"{self.version}-{self.chip}-{self.os}-py{self.python}"

    def reference(self, registry: str = DEFAULT_REGISTRY) -> str:
        return f"{registry}:{self.tag}"

    @property
    def source(self) -> str:
        return f"{SOURCE_REPOSITORY}@{SOURCE_COMMIT[:8]}:cann/{self.tag}/Dockerfile"


def _images(chip: str, os_name: str, rows: dict[str, tuple[str, ...]]) -> list[CannImage]:
    return [CannImage(v, chip, os_name, py) for v, pythons in rows.items() for py in pythons]


# Every row: a cann/<tag>/ folder and a cann_publish_version.json entry at SOURCE_COMMIT.
IMAGES: tuple[CannImage, ...] = tuple(
    _images(
        "310p",
        "ubuntu22.04",
        {
            "8.1.rc1": ("3.10", "3.11"),
            "8.2.rc1": ("3.11",),
            "8.2.rc2": ("3.11",),
            "8.3.rc1": ("3.11",),
            "8.3.rc2": ("3.11",),
            "8.5.0": ("3.11",),
            "8.5.1": ("3.11", "3.12"),
            "8.5.2": ("3.11",),
            "9.0.0": ("3.10", "3.11", "3.12"),
            "9.0.1": ("3.10", "3.11", "3.12"),
        },
    )
    + _images(
        "910b",
        "ubuntu22.04",
        {"8.3.rc2": ("3.11",), "8.5.2": ("3.10", "3.11"), "9.0.1": ("3.11",)},
    )
)


def chip_series(chip: str) -> str | None:
    """The image chip series of an inference chip: 310P* -> 310p; None for the 310 and 310B."""
    name = normalize_chip(chip, allow_auto=False)
    return "310p" if name.startswith("310P") else None


def versions(series: str) -> list[str]:
    return sorted({i.version for i in IMAGES if i.chip == series}, key=_version_key)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.]", version))


def select_image(
    chip: str = "310P3", version: str = DEFAULT_VERSION, python: str | None = None
) -> CannImage:
    """The published image for a chip, CANN version and (optionally) Python; PcbError saying
    what exists."""
    series = chip_series(chip)
    if series is None:
        raise PcbError(
            f"no published CANN image serves the Ascend {chip} ({SOURCE_REPOSITORY} publishes "
            "310p, 910b and a3 images only): build the cann image on a CANN toolkit image for "
            "it by setting pcb.cann_image (and pcb.cann_python if its tag does not end in "
            "-py3.N), e.g. one built from Huawei's toolkit package for that chip"
        )
    wanted = version.lower()
    found = [i for i in IMAGES if i.chip == series and i.version == wanted]
    if not found:
        raise PcbError(
            f"no published {series} CANN image of version {version!r} in pcb's table: choose "
            f"one of {', '.join(versions(series))} (pcb.cann_version), or name an image with "
            "pcb.cann_image"
        )
    if python:
        exact = [i for i in found if i.python == python]
        if not exact:
            offered = ", ".join(i.python for i in found)
            raise PcbError(
                f"the published {series} image of CANN {wanted} comes with Python {offered}, "
                f"not {python}: choose one of those (pcb.cann_python), or name an image with "
                "pcb.cann_image"
            )
        return exact[0]
    preferred = [i for i in found if i.python == PREFERRED_PYTHON]
    return (preferred or sorted(found, key=lambda i: i.python))[0]


def python_of(reference: str) -> str | None:
    """The Python a CANN image's tag names (`...-py3.11`), None when it names none."""
    found = _TAG.search(reference.split("@")[0])
    return found.group("python") if found else None


DEFAULT_IMAGE = select_image()
