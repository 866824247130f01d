"""The TensorRT image matrix: what `trt_image` chooses, and that the build follows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.settings import settings_from_config
from pcb.tensorrt.image_matrix import IMAGES, default_image, image_keys, tensorrt_image
from pcb.tensorrt.versions import TensorRTVersion, require_supported

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "docker" / "tensorrt" / "Dockerfile").read_text(encoding="utf-8")
LOCK = (ROOT / "docker" / "tensorrt" / "requirements.lock").read_text(encoding="utf-8")


def test_a_tensorrt_8_6_and_a_10_x_image_each_with_its_sources():
    assert image_keys() == ("10.0", "8.6")
    for image in IMAGES:
        assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d{2}\.\d{2}-py3", image.reference)
        assert image.key == f"{image.version.major}.{image.version.minor}"
        require_supported(image.version)
        assert len(image.sources) >= 2
        assert all("http" in s or "aidge" in s for s in image.sources)
    assert tensorrt_image("8.6").version == TensorRTVersion(8, 6, 1)
    assert tensorrt_image("nvcr.io/nvidia/tensorrt:24.05-py3").key == "10.0"
    assert default_image().key == "10.0"


def test_unknown_image_lists_the_choices():
    with pytest.raises(PcbError, match=r"'9\.9' is not one of .*10\.0 \(nvcr.io.*24\.05-py3"):
        tensorrt_image("9.9")


def test_the_image_build_and_the_lock_agree_with_the_matrix():
    assert default_image().reference == images.TENSORRT_BASE
    assert f"ARG BASE_IMAGE={default_image().reference}" in DOCKERFILE
    lock_python = re.search(r"ARG LOCK_PYTHON=(\S+)", DOCKERFILE).group(1)
    assert images.IMAGES["tensorrt"].python == lock_python
    assert f"--python-version {lock_python} " in LOCK  # how requirements.lock was resolved
    # One lock serves every image of the matrix: their Pythons are the lock's.
    assert {image.python for image in IMAGES} == {lock_python}


def test_the_setting():
    assert settings_from_config({}).trt_image == "10.0"
    assert settings_from_config({"trt_image": 8.6}).trt_image == "8.6"  # YAML reads 8.6 a float
    assert settings_from_config({}, trt_image="nvcr.io/nvidia/tensorrt:23.09-py3").trt_image == (
        "8.6"
    )
    with pytest.raises(PcbError, match=r"invoke.yaml: pcb.trt_image = '7.2': .*not one of"):
        settings_from_config({"trt_image": "7.2"})


def test_invoke_build_uses_the_chosen_base(monkeypatch):
    import importlib.util

    from invoke import Config, Context

    spec = importlib.util.spec_from_file_location("project_tasks", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    seen = {}

    class Result:
        def __init__(self, name):
            self.name = name

    def build_images(names, **kwargs):
        # The vendor images get their base through vendor_bases: {name: (base, python)}.
        seen["names"] = list(names)
        seen["vendor_bases"] = dict(kwargs.get("vendor_bases") or {})
        return [Result(n) for n in names]

    from pcb.orchestration import build_inputs, engine

    monkeypatch.setattr(engine, "connect", lambda *a, **k: object())
    monkeypatch.setattr(images, "build_images", build_images)
    monkeypatch.setattr(images, "describe", lambda result: result.name)
    monkeypatch.setattr(build_inputs, "resolve_base_image", lambda setting, client, names: None)
    older = Context(Config(overrides={"pcb": {"trt_image": "8.6"}}))
    tasks.build(older, image=["runtime", "tensorrt"])
    assert seen == {
        "names": ["runtime", "tensorrt"],
        "vendor_bases": {"tensorrt": ("nvcr.io/nvidia/tensorrt:23.09-py3", "3.10")},
    }
    seen.clear()
    tasks.build(Context(Config()), image=["tensorrt"])
    assert seen["vendor_bases"] == {"tensorrt": ("nvcr.io/nvidia/tensorrt:24.05-py3", "3.10")}


SOURCES = ROOT / "tests" / "fixtures" / "real" / "tensorrt_images"


def test_each_image_fact_is_in_a_kept_public_text():
    """The matrix against the public texts it cites, kept verbatim with their source."""
    import json

    manifest = json.loads((SOURCES / "manifest.json").read_text(encoding="utf-8"))
    assert {e["file"] for e in manifest} == {p.name for p in SOURCES.iterdir()} - {"manifest.json"}
    checked: dict[str, set[str]] = {}
    for entry in manifest:
        text = (SOURCES / entry["file"]).read_text(encoding="utf-8")
        needles = entry["supports"]["text"]
        for needle in [needles] if isinstance(needles, str) else needles:
            assert needle in text, (entry["file"], needle)
        checked.setdefault(entry["supports"]["image"], set()).add(text)
    new, old = tensorrt_image("10.0"), tensorrt_image("8.6")
    tag = {image.key: image.reference.split(":")[1].split("-")[0] for image in IMAGES}
    for image in (new, old):
        assert any(f"TensorRT Release {tag[image.key]}" in t for t in checked[image.key])
    # 24.05: TensorRT, CUDA, Ubuntu and Python as the NGC 24.05 notes give them.
    [notes] = [t for t in checked["10.0"] if "PaddlePaddle Release 24.05" in t]
    assert f"TensorRT {new.tensorrt}." in notes and f"NVIDIA CUDA {new.cuda}\n" in notes
    assert f"Ubuntu {new.ubuntu} including Python {new.python}" in notes
    # 23.09: a TensorRT 8.6 environment FROM the tag, and CUDA 12.2.1; the rest is inferred.
    assert any(f"FROM {old.reference}" in t for t in checked["8.6"])
    assert any(f"based on CUDA {old.cuda}," in t for t in checked["8.6"])
    assert {"ubuntu", "python"} <= set(old.inferred) and not new.inferred
