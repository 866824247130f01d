"""The cann and tensorrt Dockerfiles, built for real on stand-in bases (marked `docker`).

Their vendor bases (ascendai/cann, nvcr.io/nvidia/tensorrt) cannot be pulled here, so each is
replaced by a small image made FROM the offline Debian base that has what the Dockerfile relies
on: a toolkit set_env.sh that puts a stand-in `atc` on the PATH, or a stand-in
/usr/src/tensorrt/bin/trtexec; the ais_bench and aclruntime wheels are stand-ins too. What is
checked is the Dockerfiles' own logic: locked install, wheels from the build context, the
entry points, the non-root user, PATH. About a minute with access to the package index.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.base_image import BaseRecipe

pytestmark = pytest.mark.docker

HOST_CA = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")

CANN_STAND_IN = """\
FROM {base}
RUN mkdir -p /usr/local/Ascend/ascend-toolkit/latest/bin \\
 && printf '#!/bin/sh\\necho "ATC stand-in $*"\\n' > /usr/local/Ascend/ascend-toolkit/latest/bin/atc \\
 && chmod +x /usr/local/Ascend/ascend-toolkit/latest/bin/atc \\
 && printf 'export ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest\\nexport PATH=$ASCEND_TOOLKIT_HOME/bin:$PATH\\n' \\
    > /usr/local/Ascend/ascend-toolkit/set_env.sh
"""  # noqa: E501

TENSORRT_STAND_IN = """\
FROM {base}
RUN mkdir -p /usr/src/tensorrt/bin \\
 && printf '#!/bin/sh\\necho "&&&& trtexec stand-in $*"\\n' > /usr/src/tensorrt/bin/trtexec \\
 && chmod +x /usr/src/tensorrt/bin/trtexec
"""


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


@pytest.fixture(scope="module")
def offline_base(client) -> str:
    from docker.errors import ImageNotFound

    tag = BaseRecipe().tag
    try:
        client.images.get(tag)
    except ImageNotFound:
        pytest.skip(f"offline base {tag} not here: `invoke base-image` first")
    return tag


def stand_in(client, offline_base: str, template: str, tag: str) -> str:
    dockerfile = template.format(base=offline_base).encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    return tag


def wheel(folder: Path, name: str, version: str = "0.0.2") -> Path:
    """A minimal pure-Python wheel holding `<name>/__init__.py`."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"STAND_IN = {name!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    target = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return target


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(images.PROJECT_ROOT / "docker", root / "docker")
    shutil.copytree(
        images.PROJECT_ROOT / "pcb", root / "pcb", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(images.PROJECT_ROOT / "pyproject.toml", root)
    return root


def run(client, image: str, *command: str, entrypoint=None) -> str:
    return client.containers.run(
        image, list(command), entrypoint=entrypoint, remove=True, network_mode="none"
    ).decode()


def test_cann_dockerfile(client, offline_base, tmp_path: Path):
    base = stand_in(client, offline_base, CANN_STAND_IN, "pcb-test-cann-base:1")
    root = project_copy(tmp_path)
    wheels = root / "docker" / "cann" / "wheels"
    wheel(wheels, "aclruntime")
    wheel(wheels, "ais_bench")
    result = images.build_image(
        "cann",
        client=client,
        base_image=base,
        root=root,
        ca_bundle=HOST_CA if HOST_CA.is_file() else None,
        pull_base=False,
        quiet=True,
    )
    try:
        assert "usage: pcb" in run(client, result.tag, "--help")
        assert "ATC stand-in --version" in run(
            client, result.tag, "atc", "--version", entrypoint=["with-cann"]
        )
        imported = run(
            client,
            result.tag,
            "python",
            "-c",
            "import aclruntime, ais_bench, numpy; print(ais_bench.STAND_IN, numpy.__version__)",
            entrypoint=["with-cann"],
        )
        assert imported.startswith("ais_bench 1.")  # numpy < 2, as CANN 8 wants
        assert run(client, result.tag, "-u", entrypoint=["id"]).strip() != "0"
        labels = client.images.get(result.tag).labels
        assert labels["pcb.image"] == "cann"
    finally:
        client.images.remove(result.image_id, force=True)


def test_cann_build_without_wheels_says_where_to_put_them(client, offline_base, tmp_path: Path):
    base = stand_in(client, offline_base, CANN_STAND_IN, "pcb-test-cann-base:1")
    root = project_copy(tmp_path)
    with pytest.raises(PcbError, match=r"no ais_bench wheels: put aclruntime-\*\.whl"):
        images.build_image(
            "cann", client=client, base_image=base, root=root, pull_base=False, quiet=True
        )


def test_tensorrt_dockerfile(client, offline_base, tmp_path: Path):
    base = stand_in(client, offline_base, TENSORRT_STAND_IN, "pcb-test-tensorrt-base:1")
    root = project_copy(tmp_path)
    result = images.build_image(
        "tensorrt",
        client=client,
        base_image=base,
        root=root,
        ca_bundle=HOST_CA if HOST_CA.is_file() else None,
        pull_base=False,
        quiet=True,
    )
    try:
        assert "usage: pcb" in run(client, result.tag, "--help")
        assert "trtexec stand-in" in run(client, result.tag, "trtexec", entrypoint=["sh", "-c"])
        assert run(client, result.tag, "-u", entrypoint=["id"]).strip() != "0"
    finally:
        client.images.remove(result.image_id, force=True)
