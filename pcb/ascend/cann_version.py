"""The CANN toolkit's version, read before atc / aoe run.

atc has no version option; the toolkit records its version in `ascend_toolkit_install.info`
(`package_name=Ascend-cann-toolkit`, `version=8.2.RC1`, ...; the file users quote in vLLM
Ascend's and Ascend's own install docs), under the toolkit's `<arch>-linux/` folder: the
set_env.sh of every CANN version exports where that is (ASCEND_TOOLKIT_HOME, or
ASCEND_HOME_PATH), e.g. /usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ (CANN 5 to 8.3)
or /usr/local/Ascend/cann-8.5.2/x86_64-linux/ (8.5 on).

The atc options pcb uses (--framework=5, --model, --output, --input_format, --input_shape,
--dynamic_batch_size, --soc_version, --log) are those of the guide's CANN 5.1.RC1 and of the
CANN 8.x documentation alike; a toolkit older than 5 is refused.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import PcbError

INFO_FILE = "ascend_toolkit_install.info"
HOME_VARIABLES = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
OLDEST_MAJOR = 5
_VERSION_LINE = re.compile(r"^\s*version\s*=\s*(\S+)\s*$", re.MULTILINE)
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\w+))?(?:[.-].*)?$")


@dataclass(frozen=True)
class CannVersion:
    text: str  # as the file says: 8.2.RC1, 8.5.2, 9.1.0-beta.3
    major: int
    minor: int

    @property
    def supported(self) -> bool:
        return self.major >= OLDEST_MAJOR


def parse_toolkit_info(text: str, where: str = INFO_FILE) -> CannVersion:
    """The `version=` of an ascend_toolkit_install.info."""
    found = _VERSION_LINE.findall(text)
    if not found:
        raise PcbError(f"{where} has no `version=` line: not a CANN toolkit install record")
    value = found[-1]
    parts = _VERSION.match(value)
    if not parts:
        raise PcbError(f"{where}: version {value!r} is not a CANN version such as 8.2.RC1")
    return CannVersion(value, int(parts.group(1)), int(parts.group(2)))


def info_candidates(environ: Mapping[str, str], machine: str) -> list[Path]:
    """Where the install record is, from the toolkit's environment."""
    paths = []
    for variable in HOME_VARIABLES:
        home = environ.get(variable)
        if home:
            paths.append(Path(home) / f"{machine}-linux" / INFO_FILE)
    return paths


def read_cann_version(
    environ: Mapping[str, str] | None = None, machine: str | None = None
) -> CannVersion:
    """The toolkit version of this environment; PcbError when it cannot be read or is
    older than pcb supports."""
    environ = os.environ if environ is None else environ
    machine = machine or platform.machine()
    candidates = info_candidates(environ, machine)
    for path in candidates:
        if path.is_file():
            version = parse_toolkit_info(path.read_text(errors="replace"), str(path))
            if not version.supported:
                raise PcbError(
                    f"CANN {version.text} ({path}) is older than {OLDEST_MAJOR}.x: pcb's atc "
                    "options are checked against CANN 5.1.RC1 (the guide's) to 9.x; use a "
                    "newer cann image (docs/ascend.md, supported images)"
                )
            return version
    looked = ", ".join(str(p) for p in candidates) or f"none of {', '.join(HOME_VARIABLES)} set"
    raise PcbError(
        f"no CANN toolkit install record ({INFO_FILE}) found ({looked}): source the toolkit's "
        "set_env.sh, or run the stage in the cann image"
    )
