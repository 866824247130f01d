"""The NVIDIA TensorRT base images the tensorrt image is built and checked for.

`trt_image` in invoke.yaml chooses one by key ("10.0", the default, or "8.6"). Each entry says
where its tag and versions come from (the quoted texts are kept, verbatim, in
tests/fixtures/real/tensorrt_images and checked against these entries); what could not be read
from a public source is marked inferred. The Dockerfile compares the base's Python with the
lock's when it builds, and the stages read the TensorRT version from trtexec itself before they
run anything, so an entry that is wrong here shows as a clear message, not as wrong flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PcbError
from .versions import TensorRTVersion


@dataclass(frozen=True)
class TensorRTImage:
    key: str
    reference: str
    tensorrt: str  # what trtexec reports (X.Y.Z); the container notes add a build number
    cuda: str
    ubuntu: str
    python: str  # the base's python3, which docker/tensorrt/requirements.lock targets
    sources: tuple[str, ...]
    inferred: tuple[str, ...] = ()  # the fields no public source states for this tag

    @property
    def version(self) -> TensorRTVersion:
        return TensorRTVersion.parse(self.tensorrt)


IMAGES: tuple[TensorRTImage, ...] = (
    TensorRTImage(
        key="10.0",
        reference="nvcr.io/nvidia/tensorrt:24.05-py3",
        tensorrt="10.0.1",
        cuda="12.4.1",
        ubuntu="22.04",
        python="3.10",
        sources=(
            "TensorRT Container Release Notes (PDF, edition 24.11), chapter 10 'TensorRT "
            "Release 24.05': https://docs.nvidia.com/deeplearning/tensorrt/archives/"
            "tensorrt-1070/pdf/TensorRT-Container-Release-Notes.pdf",
            "NGC release 24.05, PaddlePaddle Release 24.05: 'Ubuntu 22.04 including Python "
            "3.10', 'NVIDIA CUDA 12.4.1', 'TensorRT 10.0.1.6 for x64 Linux': https://docs."
            "nvidia.com/deeplearning/frameworks/paddle-paddle-release-notes/rel-24-05.html",
            "Triton release compatibility matrix: 24.05 trtllm container, Python 3.10.12, "
            "TensorRT 10.0.1.6: https://docs.nvidia.com/deeplearning/triton-inference-server/"
            "archives/triton-inference-server-2540/user-guide/docs/introduction/"
            "compatibility.html",
        ),
    ),
    TensorRTImage(
        key="8.6",
        reference="nvcr.io/nvidia/tensorrt:23.09-py3",
        tensorrt="8.6.1",
        cuda="12.2.1",
        ubuntu="22.04",
        python="3.10",
        sources=(
            "TensorRT Container Release Notes (PDF, edition 24.01), chapter 8 'TensorRT "
            "Release 23.09': https://docs.nvidia.com/deeplearning/tensorrt/pdf/"
            "TensorRT-Container-Release-Notes.pdf",
            "aidge-export-tensorrt 0.2.2 (PyPI wheel) builds its TensorRT 8.6 compiler FROM "
            "this tag: aidge_export_tensorrt/static/tensorrt_8.6/tools/"
            "tensorrt8.6_compiler.Dockerfile",
            "NGC release 23.09, Triton Inference Server Release 23.09: 'Release 23.09 is based "
            "on CUDA 12.2.1': https://docs.nvidia.com/deeplearning/sdk/inference-release-notes/"
            "rel-23-09.html",
        ),
        inferred=("tensorrt patch level 8.6.1", "ubuntu", "python"),
    ),
)
DEFAULT_KEY = "10.0"


def image_keys() -> tuple[str, ...]:
    return tuple(image.key for image in IMAGES)


def tensorrt_image(key: str) -> TensorRTImage:
    """The image of `key` ("10.0", "8.6"; its reference is accepted too), else a PcbError
    listing the choices."""
    text = str(key).strip()
    for image in IMAGES:
        if text in (image.key, image.reference):
            return image
    choices = ", ".join(f"{i.key} ({i.reference}, TensorRT {i.tensorrt})" for i in IMAGES)
    raise PcbError(f"trt_image {key!r} is not one of the checked TensorRT images: {choices}")


def default_image() -> TensorRTImage:
    return tensorrt_image(DEFAULT_KEY)
