"""The stage images: what each one is, its content tag, its lock, and building it.

An image is named `pcb-<name>:<content tag>` (and `pcb-<name>:latest`), where the content tag
hashes everything that decides what the image holds: the build context (Dockerfile, lock,
entrypoint, the pcb package without its host-only parts, pyproject.toml) and the base image
(its local image id, or its reference where it is not on this machine). An image whose tag
exists is not built again. What stays on the host (the orchestration, the benchmarks,
tasks.py, the README) is not in any context, so editing it rebuilds no image.

Builds go through the Docker SDK's classic builder (no BuildKit: no `RUN --mount`, no secrets),
from a build context assembled here; a CA bundle for pip rides in the context's `build-ca/`
folder, which only the builder stages copy, so it is left in no layer of the final image.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..ascend.cann_images import DEFAULT_IMAGE as DEFAULT_CANN_IMAGE
from ..ascend.cann_images import python_of
from ..errors import PcbError
from ..tensorrt.image_matrix import default_image

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCK_PLATFORM = "x86_64-manylinux_2_28"
LATEST = "latest"
FIND_LINKS_PORT = 38611
# The label every image carries with its name (docker/*/Dockerfile): what `invoke clean` tells
# pcb's untagged old builds by.
LABEL_IMAGE = "pcb.image"


@dataclass(frozen=True)
class ImageDef:
    """One stage image family."""

    name: str
    default_base: str
    python: str  # the Python of the base, which the lock targets
    summary: str
    offline_base: bool = False  # can build FROM the debootstrap'd pcb-base image
    lock_find_links: tuple[str, ...] = ()  # extra find-links the lock was resolved with
    # Bases with other Pythons (the CANN images): one lock per Python, requirements-py311.lock;
    # empty: the one requirements.lock for `python`.
    pythons: tuple[str, ...] = ()

    @property
    def repository(self) -> str:
        return f"pcb-{self.name}"

    def lock_file(self, python: str | None = None) -> str:
        """The lock of the base's Python, relative to the project root."""
        if not self.pythons:
            return f"docker/{self.name}/requirements.lock"
        python = python or self.python
        if python not in self.pythons:
            raise PcbError(
                f"the {self.name} image has locks for Python {', '.join(self.pythons)}, not "
                f"{python}: choose a base with one of those (docs/ascend.md), or add "
                f"docker/{self.name}/requirements-py{python.replace('.', '')}.lock "
                "(docker/README.md, Regenerating the locks)"
            )
        return f"docker/{self.name}/requirements-py{python.replace('.', '')}.lock"

    def base_python(self, base: str) -> str:
        """The Python of a base: what its tag says (`-py3.11`) for multi-Python images, else
        the image's own."""
        if self.pythons:
            return python_of(base) or self.python
        return self.python

    @property
    def latest(self) -> str:
        return f"{self.repository}:{LATEST}"


# Pinned by tag and digest where a digest is known; see docker/README.md for how to re-pin.
PYTHON_SLIM = (
    "python:3.11-slim-bookworm"
    "@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91"
)
# The published CANN image for the 310P of pcb's default CANN version (pcb/ascend/cann_images.py
# lists those it relies on, with their source); invoke.yaml's cann_version / cann_image choose.
CANN_BASE = DEFAULT_CANN_IMAGE.reference()
# The default of the checked TensorRT images (pcb/tensorrt/image_matrix.py; trt_image picks).
TENSORRT_BASE = default_image().reference
TORCH_CPU_FIND_LINKS = "https://download.pytorch.org/whl/cpu/torch/"

IMAGES: dict[str, ImageDef] = {
    image.name: image
    for image in (
        ImageDef(
            "export",
            PYTHON_SLIM,
            "3.11",
            "torch (CPU build, pinned) + onnx + onnxruntime: checkpoint -> ONNX, demo checkpoint",
            offline_base=True,
            lock_find_links=(TORCH_CPU_FIND_LINKS,),
        ),
        ImageDef(
            "runtime",
            PYTHON_SLIM,
            "3.11",
            "numpy, pillow, onnxruntime, scikit-learn, matplotlib: CPU stages",
            offline_base=True,
        ),
        ImageDef(
            "cann",
            CANN_BASE,
            DEFAULT_CANN_IMAGE.python,
            "CANN toolkit (atc, aoe) + ais_bench/aclruntime: Ascend convert, infer, perf",
            pythons=("3.10", "3.11", "3.12"),
        ),
        ImageDef(
            "tensorrt",
            TENSORRT_BASE,
            default_image().python,
            "TensorRT (trtexec, Python bindings): GPU perf, int8 calibration, GPU inference",
        ),
    )
}


def image_def(name: str) -> ImageDef:
    try:
        return IMAGES[name]
    except KeyError:
        raise PcbError(f"unknown image {name!r}: expected one of {', '.join(IMAGES)}") from None


# ---- locks -----------------------------------------------------------------------------------


def lock_command(
    name: str, find_links: Sequence[str] = (), uv: str = "uv", python: str | None = None
) -> list[str]:
    """The command that regenerates docker/<name>/requirements.lock (requirements-py3NN.lock
    for `python` of an image with a lock per Python; or the build-tools lock for name
    "build-tools"), run from the project root. `find_links` replaces the image's own (for the
    export image: where the torch CPU wheel is, e.g. /opt/wheels on a machine that has it on
    disk)."""
    if name == "build-tools":
        source, target = "docker/build-tools.in", "docker/build-tools.lock"
        python, links = "3.9", ()
    else:
        image = image_def(name)
        source = f"docker/{name}/requirements.in"
        target = image.lock_file(python)
        python, links = python or image.python, tuple(find_links) or image.lock_find_links
    command = [
        uv,
        "pip",
        "compile",
        source,
        "--generate-hashes",
        "--python-version",
        python,
        "--python-platform",
        LOCK_PLATFORM,
        "--quiet",
    ]
    for link in links:
        command += ["--find-links", link]
    command += ["-o", target]
    return command


def regenerate_locks(
    names: Sequence[str] = ("build-tools", *IMAGES),
    find_links: Sequence[str] = (),
    uv: str = "uv",
    root: Path = PROJECT_ROOT,
) -> None:
    """Run lock_command for each name (needs `uv` from PyPI and access to the package index)."""
    for name in names:
        links = find_links if name == "export" else ()
        pythons = IMAGES[name].pythons if name in IMAGES else ()
        for python in pythons or (None,):
            command = lock_command(name, links, uv, python)
            print("+ " + " ".join(command), flush=True)
            subprocess.run(command, cwd=root, check=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the build context and the content tag ---------------------------------------------------


README_STUB = b"# pcb\n\nPCB re-ID: see the project repository.\n"
# The parts of pcb that only the host runs (tests/test_layers.py: nothing below them imports
# them); no image gets them.
HOST_ONLY = ("pcb/orchestration/", "pcb/bench/")


def _source_entries(root: Path) -> dict[str, tuple[bytes, int]]:
    """The pcb package an image installs, and its packaging: {path in the context: (bytes,
    mode)}. pyproject.toml names README.md as the long description: a stub stands in for the
    project's, so that editing the documentation rebuilds no image."""
    entries = {"pyproject.toml": _entry(root / "pyproject.toml"), "README.md": (README_STUB, 0o644)}
    for path in sorted((root / "pcb").rglob("*")):
        name = path.relative_to(root).as_posix()
        if name.startswith(HOST_ONLY) or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        if path.is_file():
            entries[name] = _entry(path)
    return entries


def _entry(path: Path) -> tuple[bytes, int]:
    if not path.is_file():
        raise PcbError(f"{path} is missing: is {PROJECT_ROOT} the project root?")
    return path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644


def context_entries(name: str, root: Path = PROJECT_ROOT) -> dict[str, tuple[bytes, int]]:
    """Every file of the build context but the CA bundle: {path in the context: (bytes, mode)}.

    docker/<name>/ (Dockerfile, lock, entrypoint, ...), docker/build-tools.lock, pyproject.toml,
    a stub README.md and pcb/** but its HOST_ONLY folders. (docker/cann/wheels/ always holds
    at least its .gitignore, so that the Dockerfile's COPY of the folder works when no wheel
    was put there.)
    """
    image_def(name)
    folder = root / "docker" / name
    if not (folder / "Dockerfile").is_file():
        raise PcbError(f"{folder / 'Dockerfile'} is missing: is {root} the project root?")
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            entries[path.relative_to(root).as_posix()] = _entry(path)
    entries["docker/build-tools.lock"] = _entry(root / "docker" / "build-tools.lock")
    entries.update(_source_entries(root))
    return entries


def _digest_entries(entries: Mapping[str, tuple[bytes, int]]) -> Any:
    digest = hashlib.sha256()
    for key in sorted(entries):
        data, mode = entries[key]
        digest.update(f"{key}\0{mode:o}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return digest


def sources_digest(root: Path = PROJECT_ROOT) -> str:
    """Hash of the pcb sources and packaging files (labels an image; tells a stale image)."""
    return _digest_entries(_source_entries(root)).hexdigest()


def content_digest(name: str, base_id: str, root: Path = PROJECT_ROOT) -> str:
    """Hash of the build context (CA bundle aside) and the base image: equal inputs, equal
    digest; any changed byte, file or mode, or another base, another digest."""
    digest = _digest_entries(context_entries(name, root))
    digest.update(f"base\0{base_id}\n".encode())
    return digest.hexdigest()


def content_tag(name: str, base_id: str, root: Path = PROJECT_ROOT) -> str:
    """`pcb-<name>:<first 12 hex digits of content_digest>`."""
    return f"{image_def(name).repository}:{content_digest(name, base_id, root)[:12]}"


def base_image_id(client: Any, base_image: str) -> str:
    """The base's local image id; its reference where it is not here (a digest-pinned
    reference names its content; a plain tag may move: pin by digest on a normal host)."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(base_image).id
    except ImageNotFound:
        return base_image


def context_tar(name: str, root: Path = PROJECT_ROOT, ca_bundle: Path | None = None) -> io.BytesIO:
    """The build context as an uncompressed tar, with fixed owners and times. With a CA
    bundle it holds build-ca/ca.crt, else the empty placeholder build-ca/.none."""
    entries = dict(context_entries(name, root))
    if ca_bundle is not None:
        ca_bundle = Path(ca_bundle)
        if not ca_bundle.is_file():
            raise PcbError(f"CA bundle {ca_bundle} not found: give a PEM file or leave it out")
        entries["build-ca/ca.crt"] = (ca_bundle.read_bytes(), 0o644)
    else:
        entries["build-ca/.none"] = (b"", 0o644)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(entries):
            data, mode = entries[key]
            info = tarfile.TarInfo(key)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def source_revision(root: Path = PROJECT_ROOT) -> str:
    """`git rev-parse HEAD`, with `-dirty` when the work tree has changes; "unknown" outside
    a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# ---- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str  # pcb-<name>:<content tag>
    image_id: str
    built: bool  # False: the tag was already there
    seconds: float
    size_bytes: int

    @property
    def latest(self) -> str:
        return image_def(self.name).latest


def check_base_available(client: Any, base_image: str, name: str, pull: bool = True) -> None:
    """Pre-flight of a build: the base image is here, or can be pulled now."""
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(base_image)
        return
    except ImageNotFound:
        pass
    reason = "pulling is switched off"
    if pull:
        try:
            client.images.pull(base_image)
            return
        except DockerException as error:
            reason = f"pulling it failed: {_first_line(error)}"
    if image_def(name).offline_base:
        fix = (
            "On a machine without registry access, build the offline Debian base first "
            "(`invoke base-image`) and build FROM it: "
            f"`invoke build --image {name} --base-image pcb-base:bookworm-<hash>` "
            "(the tag `invoke base-image` prints)."
        )
    else:
        fix = (
            f"The {name} image needs its vendor base: pull it on a machine with registry access "
            f"(`docker pull {base_image}`, then `docker save` / `docker load` to bring it here), "
            "or pass another local base with --base-image."
        )
    raise PcbError(f"base image {base_image} is not on this machine and {reason}. {fix}")


AIS_WHEELS = "docker/cann/wheels"


def check_ais_wheels(root: Path, python: str, extra_build_args: Mapping[str, str]) -> None:
    """The cann build needs aclruntime compiled for the base's Python: where the wheels are in
    docker/cann/wheels/ (and no other folder is given), one must match, or the build would
    stop late with pip's "no matching distribution"."""
    if extra_build_args.get("AIS_BENCH_FIND_LINKS"):
        return  # checked by pip in the build, against a folder not on this machine
    folder = root / AIS_WHEELS
    wheels = sorted(p.name for p in folder.glob("aclruntime-*.whl"))
    tag = f"cp{python.replace('.', '')}"
    # A wheel for this CPython (cp311), or a pure one (py3-none-any) that installs anywhere.
    if wheels and not any(f"-{tag}-" in name or "-py3-none-" in name for name in wheels):
        raise PcbError(
            f"{AIS_WHEELS}/ holds aclruntime wheels for other Pythons ({', '.join(wheels)}), "
            f"none for the base's Python {python} ({tag}): add "
            f"aclruntime-0.0.2-{tag}-{tag}-linux_<arch>.whl (docker/README.md), or choose a "
            "base with a Python you have the wheel for (pcb.cann_version / pcb.cann_image)"
        )


@dataclass(frozen=True)
class BaseCheck:
    """What a registry and this machine say about a base image."""

    image: str
    base: str
    digest: str | None  # the registry's, sha256:...
    local_id: str | None
    error: str | None  # why the registry could not be asked

    def describe(self) -> str:
        here = f"on this machine as {self.local_id[:19]}" if self.local_id else "not here"
        if self.digest:
            return (
                f"{self.image}: base {self.base} has registry digest {self.digest} ({here}); "
                f"pin it as {self.base.split('@')[0]}@{self.digest}"
            )
        return (
            f"{self.image}: base {self.base}: its registry could not be reached from the "
            f"Docker engine ({self.error}); its digest is unknown ({here}). On a machine that "
            "reaches the registry: "
            f"`invoke build --image {self.image} --check`, or `docker pull {self.base}` then "
            "`docker inspect --format '{{index .RepoDigests 0}}' " + self.base + "`"
        )


def check_base(client: Any, name: str, base: str | None = None) -> BaseCheck:
    """The registry digest of an image's base, as the engine's distribution endpoint reports it
    (the engine asks the registry), and whether this machine has it; builds nothing."""
    from docker.errors import DockerException, ImageNotFound

    base = base or image_def(name).default_base
    try:
        local_id: str | None = client.images.get(base).id
    except ImageNotFound:
        local_id = None
    except DockerException as error:
        raise PcbError(f"the Docker engine did not answer: {_first_line(error)}") from None
    try:
        data = client.images.get_registry_data(base)
    except DockerException as error:
        return BaseCheck(name, base, None, local_id, _first_line(error))
    return BaseCheck(name, base, data.id, local_id, None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def build_args(
    name: str,
    base_image: str,
    *,
    index_url: str | None = None,
    find_links: str | None = None,
    revision: str = "unknown",
    tag: str = "unknown",
    root: Path = PROJECT_ROOT,
    extra: Mapping[str, str] | None = None,
    python: str | None = None,
) -> dict[str, str]:
    """The --build-arg values of one build; `python`: the base's, for an image with a lock
    per Python (default: what the base's tag says)."""
    image = image_def(name)
    python = python or image.base_python(base_image)
    args = {
        "BASE_IMAGE": base_image,
        "SOURCE_REVISION": revision,
        "LOCK_SHA256": file_sha256(root / image.lock_file(python)),
        "CONTENT_TAG": tag,
        "SOURCES_SHA256": sources_digest(root),
    }
    if image.pythons:
        args["BASE_PYTHON"] = python
    if index_url:
        args["INDEX_URL"] = index_url
    if find_links:
        args["FIND_LINKS"] = find_links
    args.update(extra or {})
    return args


def build_image(
    name: str,
    *,
    client: Any = None,
    base_image: str | None = None,
    index_url: str | None = None,
    find_links: str | None = None,
    ca_bundle: Path | None = None,
    extra_build_args: Mapping[str, str] | None = None,
    root: Path = PROJECT_ROOT,
    force: bool = False,
    nocache: bool = False,
    pull_base: bool = True,
    network_mode: str = "host",
    quiet: bool = False,
    output: IO[str] | None = None,
    python: str | None = None,
) -> BuildResult:
    """Build docker/<name> unless an image with its content tag is already here.

    `base_image` overrides the Dockerfile's pinned base (e.g. the offline pcb-base image);
    `index_url` / `find_links` point pip elsewhere (find_links: a URL such as the one
    `serve_folder` gives, reachable from the build through the host network); `ca_bundle` is
    a PEM file pip trusts during the build only. `python`: the base's Python, which picks the
    lock of an image with one per Python (default: what the base's tag says, `-py3.11`).
    `extra_build_args` passes further build arguments (the cann image's AIS_BENCH_FIND_LINKS,
    for one). The build log is streamed to `output` (default stdout) unless `quiet`.
    """
    from docker.errors import ImageNotFound

    from .engine import connect

    client = client or connect()
    image = image_def(name)
    base = base_image or image.default_base
    out = output or sys.stdout
    python = python or image.base_python(base)
    image.lock_file(python)  # a Python without a lock is named before any pull
    if name == "cann":
        check_ais_wheels(root, python, extra_build_args or {})
    check_base_available(client, base, name, pull=pull_base)
    tag = content_tag(name, base_image_id(client, base), root)
    if not force:
        try:
            existing = client.images.get(tag)
        except ImageNotFound:
            pass
        else:
            client.api.tag(existing.id, image.repository, LATEST)
            if not quiet:
                print(f"{tag} is up to date ({existing.short_id})", file=out, flush=True)
            return BuildResult(name, tag, existing.id, False, 0.0, existing.attrs.get("Size", 0))

    args = build_args(
        name,
        base,
        index_url=index_url,
        find_links=find_links,
        revision=source_revision(root),
        tag=tag,
        root=root,
        extra=extra_build_args,
        python=python,
    )
    if not quiet:
        shown = " ".join(f"{k}={v}" for k, v in args.items() if k not in {"SOURCES_SHA256"})
        print(f"building {tag} ({shown})", file=out, flush=True)
    start = time.monotonic()
    repository, version = tag.split(":", 1)
    context = context_tar(name, root, ca_bundle)
    stream = client.api.build(
        fileobj=context,
        custom_context=True,
        dockerfile=f"docker/{name}/Dockerfile",
        tag=tag,
        buildargs=args,
        network_mode=network_mode,
        rm=True,
        forcerm=True,
        nocache=nocache,
        pull=False,
        decode=True,
    )
    image_id = _follow_build(stream, name, out, quiet)
    seconds = time.monotonic() - start
    built = client.images.get(image_id or tag)
    client.api.tag(built.id, repository, LATEST)
    size = built.attrs.get("Size", 0)
    if not quiet:
        print(
            f"built {tag} ({built.short_id}, {size / 1e6:.0f} MB) in {seconds:.0f} s",
            file=out,
            flush=True,
        )
    return BuildResult(name, tag, built.id, True, seconds, size)


def _follow_build(stream: Iterator[dict], name: str, out: IO[str], quiet: bool) -> str:
    """Print the build log as it comes; return the image id; raise on a build error."""
    image_id = ""
    tail: list[str] = []
    for chunk in stream:
        if "stream" in chunk:
            text = chunk["stream"]
            tail = (tail + text.splitlines())[-30:]
            if not quiet:
                out.write(text)
                out.flush()
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            last = "\n".join(tail[-15:])
            raise PcbError(
                f"building image {name} failed: {detail.strip()}\n--- last build output ---\n"
                f"{last}\n(check network access to the package index, or pass --index-url / "
                "--find-links / --ca-bundle)"
            )
    return image_id


@contextlib.contextmanager
def serve_folder(
    folder: Path, host: str = "127.0.0.1", port: int = FIND_LINKS_PORT
) -> Iterator[str]:
    """Serve `folder` over HTTP on host:port while the block runs; yields its URL, a find-links
    location for pip in a build on the host network. The fixed default port keeps the URL, a
    build argument, the same from build to build, so Docker's layer cache still applies; when
    it is taken, any free port is used (0 asks for one outright)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PcbError(f"find-links folder {folder} does not exist")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="find-links", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def build_images(
    names: Sequence[str] = ("export", "runtime"),
    *,
    client: Any = None,
    base_image: str | None = None,
    wheels: Path | None = None,
    index_url: str | None = None,
    find_links: str | None = None,
    ca_bundle: Path | None = None,
    extra_build_args: Mapping[str, Mapping[str, str]] | None = None,
    vendor_bases: Mapping[str, tuple[str, str | None]] | None = None,
    force: bool = False,
    quiet: bool = False,
    root: Path = PROJECT_ROOT,
) -> list[BuildResult]:
    """Build several images in order.

    `vendor_bases`: {image name: (base, its Python or None)} for images built on a vendor
    image other than their default, e.g. {"cann": ("ascendai/cann:9.0.1-...-py3.12", "3.12")}.

    `wheels`: a local folder of wheels (e.g. /opt/wheels with the torch CPU wheel), served over
    HTTP for the duration and given as find-links to the images whose lock needs an extra
    find-links location (export: torch); `find_links` goes to every image. `base_image`
    applies to the images that accept the offline base (export, runtime). `extra_build_args`:
    {image name: {build argument: value}}, e.g. {"cann": {"AIS_BENCH_FIND_LINKS": url}}."""
    from .engine import connect

    client = client or connect()
    results = []
    with contextlib.ExitStack() as stack:
        served = None
        if wheels is not None and any(image_def(n).lock_find_links for n in names):
            served = stack.enter_context(serve_folder(wheels))
        for name in names:
            image = image_def(name)
            links = find_links or (served if image.lock_find_links else None)
            vendor, python = (vendor_bases or {}).get(name, (None, None))
            results.append(
                build_image(
                    name,
                    client=client,
                    base_image=base_image if image.offline_base else vendor,
                    python=python,
                    index_url=index_url,
                    find_links=links,
                    ca_bundle=ca_bundle,
                    extra_build_args=(extra_build_args or {}).get(name),
                    force=force,
                    quiet=quiet,
                    root=root,
                )
            )
    return results


def describe(result: BuildResult) -> str:
    return json.dumps(
        {
            "image": result.name,
            "tag": result.tag,
            "id": result.image_id,
            "built": result.built,
            "seconds": round(result.seconds, 1),
            "size_mb": round(result.size_bytes / 1e6),
        }
    )
