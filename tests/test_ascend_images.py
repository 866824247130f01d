"""The cann image's base: the published CANN images pcb knows (pcb/ascend/cann_images.py), the
choice by chip, CANN version and Python, the lock per Python, and `invoke build --check`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcb.ascend.cann_images import (
    DEFAULT_IMAGE,
    IMAGES,
    REGISTRIES,
    SOURCE_COMMIT,
    python_of,
    select_image,
    versions,
)
from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.builds import cann_base
from pcb.orchestration.settings import settings_from_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_a_published_310p_tag_with_the_python_aclruntime_has_wheels_for():
    assert DEFAULT_IMAGE.tag == "8.5.2-310p-ubuntu22.04-py3.11"
    assert images.IMAGES["cann"].default_base == f"ascendai/cann:{DEFAULT_IMAGE.tag}"
    assert images.IMAGES["cann"].python == "3.11"
    dockerfile = (ROOT / "docker/cann/Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=ascendai/cann:{DEFAULT_IMAGE.tag}\n" in dockerfile
    assert "ARG BASE_PYTHON=3.11\n" in dockerfile
    assert REGISTRIES == ("ascendai/cann", "quay.io/ascend/cann")
    assert DEFAULT_IMAGE.source.endswith("cann/8.5.2-310p-ubuntu22.04-py3.11/Dockerfile")


def test_the_table_holds_only_tags_of_the_published_form():
    assert len(SOURCE_COMMIT) == 40
    for image in IMAGES:
        assert re.fullmatch(r"\d+\.\d+\.(\d+|rc\d)-(310p|910b)-ubuntu22\.04-py3\.1[0-2]", image.tag)
        assert image.python in images.IMAGES["cann"].pythons  # a lock exists for it
    # No 310P tag before 8.1.rc1 was ever published there (the old default, 8.0.rc1-...-py3.9,
    # does not exist).
    assert versions("310p")[0] == "8.1.rc1" and "8.0.rc1" not in versions("310p")


@pytest.mark.parametrize(
    "chip, version, python, tag",
    [
        ("310P3", "8.5.2", None, "8.5.2-310p-ubuntu22.04-py3.11"),
        ("310P1", "9.0.1", None, "9.0.1-310p-ubuntu22.04-py3.11"),  # 3.11 preferred
        ("310P3", "9.0.1", "3.12", "9.0.1-310p-ubuntu22.04-py3.12"),
        ("310P3", "8.1.RC1", "3.10", "8.1.rc1-310p-ubuntu22.04-py3.10"),
        ("Ascend310P3", "8.5.1", "3.12", "8.5.1-310p-ubuntu22.04-py3.12"),
    ],
)
def test_select_image(chip, version, python, tag):
    assert select_image(chip, version, python).tag == tag


def test_select_image_refuses_what_is_not_published():
    with pytest.raises(PcbError, match=r"no published CANN image serves the Ascend 310 .*"):
        select_image("310", "8.5.2")
    with pytest.raises(PcbError, match=r"no published CANN image serves the Ascend 310B1"):
        select_image("310B1")
    with pytest.raises(PcbError, match=r"version '8.0.rc1' .* choose one of 8.1.rc1, "):
        select_image("310P3", "8.0.rc1")
    with pytest.raises(PcbError, match=r"comes with Python 3.11, not 3.12"):
        select_image("310P3", "8.5.2", "3.12")


def test_python_of_a_reference():
    assert python_of("ascendai/cann:9.0.1-310p-ubuntu22.04-py3.12") == "3.12"
    assert python_of("quay.io/ascend/cann:9.0.0-310p-ubuntu22.04-py3.10-devel") == "3.10"
    assert python_of("my/toolkit:latest") is None
    assert python_of("ascendai/cann:8.5.2-310p-ubuntu22.04-py3.11@sha256:" + "0" * 64) == "3.11"


def test_cann_base_from_settings():
    assert cann_base(settings_from_config({})) == (images.CANN_BASE, "3.11")
    chosen = settings_from_config({"chip": "310P3", "cann_version": "9.0.1", "cann_python": 3.12})
    assert cann_base(chosen) == ("ascendai/cann:9.0.1-310p-ubuntu22.04-py3.12", "3.12")
    own = settings_from_config({"chip": "310", "cann_image": "registry.local/cann-310:7.0"})
    with pytest.raises(PcbError, match=r"does not say its Python .* pcb.cann_python"):
        cann_base(own)
    assert cann_base(settings_from_config({"cann_image": "x:1", "cann_python": "3.10"})) == (
        "x:1",
        "3.10",
    )
    with pytest.raises(PcbError, match="no published CANN image serves the Ascend 310 "):
        cann_base(settings_from_config({"chip": "310"}))
    with pytest.raises(PcbError, match=r"pcb.cann_python = '3.9': expected 3.10, 3.11 or 3.12"):
        settings_from_config({"cann_python": "3.9"})


def test_lock_and_build_arguments_follow_the_base_python(tmp_path: Path):
    cann = images.IMAGES["cann"]
    assert cann.lock_file("3.10") == "docker/cann/requirements-py310.lock"
    assert cann.base_python("ascendai/cann:9.0.1-310p-ubuntu22.04-py3.12") == "3.12"
    assert cann.base_python("pcb-test-cann-base:1") == "3.11"  # the image's own
    with pytest.raises(PcbError, match=r"locks for Python 3.10, 3.11, 3.12, not 3.9"):
        cann.lock_file("3.9")
    args = images.build_args("cann", "ascendai/cann:9.0.1-310p-ubuntu22.04-py3.12")
    assert args["BASE_PYTHON"] == "3.12"
    assert args["LOCK_SHA256"] == images.file_sha256(ROOT / "docker/cann/requirements-py312.lock")
    assert "BASE_PYTHON" not in images.build_args("runtime", "python:3.11")
    for python in cann.pythons:  # each lock for its Python, CANN's TBE packages included
        lock = (ROOT / cann.lock_file(python)).read_text()
        assert f"--python-version {python} " in lock and "\ndecorator==" in lock
        assert re.search(r"^numpy==1\.", lock, re.M)  # numpy < 2, as CANN 8 wants


def test_aclruntime_wheels_must_match_the_python(tmp_path: Path):
    wheels = tmp_path / "docker" / "cann" / "wheels"
    wheels.mkdir(parents=True)
    images.check_ais_wheels(tmp_path, "3.11", {})  # none here: the Dockerfile says where
    (wheels / "aclruntime-0.0.2-cp39-cp39-linux_x86_64.whl").write_bytes(b"")
    with pytest.raises(PcbError, match=r"none for the base's Python 3.11 \(cp311\)"):
        images.check_ais_wheels(tmp_path, "3.11", {})
    images.check_ais_wheels(tmp_path, "3.11", {"AIS_BENCH_FIND_LINKS": "http://h/w/"})
    (wheels / "aclruntime-0.0.2-cp311-cp311-linux_aarch64.whl").write_bytes(b"")
    images.check_ais_wheels(tmp_path, "3.11", {})
    (wheels / "aclruntime-0.0.2-cp311-cp311-linux_aarch64.whl").unlink()
    (wheels / "aclruntime-0.0.2-py3-none-any.whl").write_bytes(b"")  # pure: any Python
    images.check_ais_wheels(tmp_path, "3.11", {})


class _Registry:
    """A Docker SDK client's images collection, answering as an engine without a registry
    (the error text of this machine's engine) or with one."""

    def __init__(self, digest: str | None, local: bool = False):
        self.digest, self.local = digest, local

    @property
    def images(self):
        return self

    def get(self, reference):
        from docker.errors import ImageNotFound

        if not self.local:
            raise ImageNotFound(reference)
        return type("Image", (), {"id": "sha256:" + "ab" * 32})()

    def get_registry_data(self, reference):
        from docker.errors import APIError

        if self.digest is None:
            raise APIError(
                '500 Server Error: Internal Server Error ("Get "https://registry-1.docker.io/'
                'v2/": dial tcp: lookup registry-1.docker.io: no such host")'
            )
        return type("RegistryData", (), {"id": self.digest})()


def test_check_reports_a_digest_or_why_there_is_none():
    unreachable = images.check_base(_Registry(None), "cann")
    assert unreachable.digest is None and "no such host" in unreachable.error
    text = unreachable.describe()
    assert text.startswith(f"cann: base {images.CANN_BASE}: its registry could not be reached")
    assert "`docker pull ascendai/cann:8.5.2-310p-ubuntu22.04-py3.11`" in text
    digest = "sha256:" + "12" * 32
    found = images.check_base(_Registry(digest, local=True), "tensorrt")
    assert found.base == images.TENSORRT_BASE and found.digest == digest
    assert f"pin it as {images.TENSORRT_BASE}@{digest}" in found.describe()
    assert "on this machine as sha256:abab" in found.describe()


@pytest.mark.docker
def test_check_against_this_machines_engine(capsys):
    """The engine here reaches no registry: `invoke build --check` says so, for cann and for
    tensorrt, and exits 1."""
    import importlib.util

    from invoke import Context, Exit

    from pcb.orchestration import docker_executor

    spec = importlib.util.spec_from_file_location("project_tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)

    try:
        docker_executor.connect(timeout=30)
    except PcbError as error:
        pytest.skip(f"no Docker engine: {error}")
    with pytest.raises(Exit) as stopped:
        tasks.build(Context(), image=["cann", "tensorrt"], check=True)
    assert stopped.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"cann: base {images.CANN_BASE}: its registry could not be reached")
    assert out[1].startswith(f"tensorrt: base {images.TENSORRT_BASE}: its registry could not")


def test_regenerate_locks_writes_one_per_python(tmp_path: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(images.subprocess, "run", lambda command, **_: calls.append(command))
    images.regenerate_locks(["cann"], uv="uv", root=tmp_path)
    assert [c[-1] for c in calls] == [
        f"docker/cann/requirements-py{v}.lock" for v in ("310", "311", "312")
    ]
    assert [c[c.index("--python-version") + 1] for c in calls] == ["3.10", "3.11", "3.12"]
