"""The `engines` setting, endpoints, the remote spec and the transfer planning: no engine
needed (tests/test_remote_engine.py runs them against a second, real one)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import endpoints, transfer
from pcb.orchestration.docker_executor import DockerExecutor
from pcb.orchestration.dry_run import describe_plan
from pcb.orchestration.executors import EngineRouter
from pcb.orchestration.pipeline import cpu_pipeline
from pcb.orchestration.remote_executor import RemoteExecutor, volume_names
from pcb.orchestration.routing import executor_for
from pcb.orchestration.settings import Settings, settings_from_config

SSH = "ssh://pcbremote@127.0.0.1:2222"


def test_engines_from_yaml_mapping_and_from_options():
    yaml = settings_from_config({"engines": {"runtime": SSH, "export": "local"}})
    assert yaml.engines == (("runtime", SSH),)
    given = settings_from_config({}, engines=[f"runtime={SSH}", "tensorrt=gpu-box"])
    assert dict(given.engines) == {"runtime": SSH, "tensorrt": "gpu-box"}
    bare = settings_from_config({}, engines=["unix:///run/e2.sock"])
    assert {image for image, _ in bare.engines} == set(endpoints.IMAGE_FAMILIES)
    assert settings_from_config({}).engines == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"gpu": SSH}, "'gpu' is no image"),
        (["npu=ssh://u@h"], "'npu' is no image"),
        ({"runtime": "ssh://host-without-user"}, "name the remote user"),
        ({"runtime": "http://h:2375"}, "expected local, a Docker context name"),
    ],
)
def test_bad_engines_are_refused_naming_the_fix(value, words):
    with pytest.raises(PcbError, match="pcb.engines") as error:
        settings_from_config({"engines": value})
    assert words in str(error.value)


def test_cli_prefix_per_kind_of_endpoint():
    assert endpoints.Endpoint("npu-host").cli_prefix() == "docker --context npu-host"
    assert endpoints.Endpoint(SSH).cli_prefix() == f"DOCKER_HOST={SSH} docker"
    assert endpoints.Endpoint("local").cli_prefix() == "docker"


def test_an_unknown_context_names_itself_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(PcbError, match="no Docker context named npu-box .for stage infer."):
        endpoints.client_for(endpoints.Endpoint("npu-box"), "infer")


def test_an_unreachable_engine_names_host_and_stage():
    with pytest.raises(PcbError) as error:
        endpoints.client_for(endpoints.Endpoint("tcp://127.0.0.1:9"), "preprocess", timeout=5)
    text = str(error.value)
    assert "tcp://127.0.0.1:9" in text and "stage preprocess" in text and "DOCKER_CERT" in text


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """data/ and results/ (the demo's relative paths) under tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def remote_settings(tmp_path: Path) -> Settings:
    return settings_from_config({}, engines=[f"runtime={SSH}"], demo=True)


def test_router_sends_each_image_to_its_engine(in_tmp, tmp_path):
    settings = remote_settings(tmp_path)
    executor = executor_for(settings)
    assert isinstance(executor, EngineRouter)
    calls = {call.stage: call for call in cpu_pipeline(settings)}
    assert isinstance(executor.executor(calls["export"]), DockerExecutor)
    assert isinstance(executor.executor(calls["infer"]), RemoteExecutor)
    assert executor.executor(calls["infer"]) is executor.executor(calls["perf"])


def test_remote_specs_mount_volumes_only(in_tmp, tmp_path):
    settings = remote_settings(tmp_path)
    remote = executor_for(settings).executor(cpu_pipeline(settings)[3])
    data, results = volume_names(settings.results_dir)
    for call in cpu_pipeline(settings):
        spec = remote.spec(call, "pcb-runtime:x", memory_total=8 << 30)
        assert {(m.kind, m.source) for m in spec.mounts} <= {("volume", data), ("volume", results)}
        kwargs = spec.create_kwargs()
        assert all(m["Type"] == "volume" for m in kwargs["mounts"])
        assert str(tmp_path) not in " ".join(m["Source"] for m in kwargs["mounts"])
        # the far host's memory, less a tenth
        assert spec.memory_limit == int((8 << 30) * 0.9) // (1 << 20) * (1 << 20)


def test_dry_run_names_the_engine_and_the_command_line_for_it(in_tmp, tmp_path):
    settings = remote_settings(tmp_path)
    lines = describe_plan(cpu_pipeline(settings), settings)
    text = "\n".join(lines)
    assert "[2/7] export (pcb-export on local)" in text
    assert f"[4/7] infer (pcb-runtime on {SSH}; its inputs sent to volumes" in text
    assert f"DOCKER_HOST={SSH} docker run --rm" in text
    data, results = volume_names(settings.results_dir)
    assert f"-v {data}:/data:ro -v {results}:/results" in text


# ---- transfer planning -------------------------------------------------------------------------


def test_listing_skips_the_lock_and_the_digest_cache(tmp_path):
    run = tmp_path / "run"
    (run / "bins").mkdir(parents=True)
    (run / "bins" / "a.bin").write_bytes(b"a" * 10)
    (run / ".pcb.lock").write_text("{}")
    (run / ".pcb" / "digests").mkdir(parents=True)
    (run / ".pcb" / "digests" / "x.json").write_text("{}")
    (run / ".pcb" / "trees").mkdir()
    (run / ".pcb" / "trees" / "t.json").write_text("{}")
    listing = transfer.local_listing([transfer.Root(run, "/results/run")])
    assert sorted(listing) == ["/results/run/.pcb/trees/t.json", "/results/run/bins/a.bin"]
    assert listing["/results/run/bins/a.bin"][0] == 10


def test_only_what_differs_is_sent_in_bounded_batches():
    source = {"/r/a": (5, "d1"), "/r/b": (5, "d2"), "/r/c": (50, "d3"), "/r/d": (1, "d4")}
    target = {"/r/a": (5, "d1"), "/r/b": (5, "other"), "/r/x": (3, "d9")}
    send = transfer.differing(source, target)
    assert send == ["/r/b", "/r/c", "/r/d"]
    assert transfer.batches(send, source, limit=10) == [["/r/b"], ["/r/c"], ["/r/d"]]
    assert transfer.batches(send, source, limit=100) == [send]


@pytest.mark.parametrize("path", ["/results/run/../../etc/passwd", "/etc/passwd", "results/x"])
def test_a_path_outside_the_run_folders_is_refused(tmp_path, path):
    with pytest.raises(PcbError, match="refused"):
        transfer.local_path(path, [transfer.Root(tmp_path, "/results/run")])


def test_upload_tar_gives_folders_and_files_to_the_stage_user(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "pcb.onnx").write_bytes(b"onnx")
    roots = [transfer.Root(run, "/results/run")]
    buffer = io.BytesIO()
    transfer._write_tar(buffer, ["/results/run/model/pcb.onnx"], roots, 1000, 1000)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == [
            "results",
            "results/run",
            "results/run/model",
            "results/run/model/pcb.onnx",
        ]
        assert {(m.uid, m.gid) for m in members.values()} == {(1000, 1000)}
        assert tar.extractfile("results/run/model/pcb.onnx").read() == b"onnx"


def test_print_docker_gives_each_stage_its_engine(in_tmp, capsys):
    from pcb.orchestration import commands

    settings = remote_settings(in_tmp)
    commands.run_calls(settings, cpu_pipeline(settings)[1:4], print_docker=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # export here, preprocess and infer there
    assert lines[0].startswith("docker run") and f"-v {in_tmp}" in lines[0]
    assert all(line.startswith(f"DOCKER_HOST={SSH} docker run") for line in lines[1:])
    # No folder of this host is mounted there (PCB_HOST_RESULTS may still name the local run
    # folder: the outputs come back to it, so a report names where the user finds them).
    assert all(f"-v {in_tmp}" not in line for line in lines[1:])
    assert all("-v pcb-" in line for line in lines[1:])


# ---- images on the far engine (fake engines: the real one is tests/test_remote_engine.py) ------


class FakeImage:
    def __init__(self, image_id: str, tags: list[str]) -> None:
        self.id, self.tags, self.tagged = image_id, tags, []

    def tag(self, repository: str, tag: str) -> None:
        self.tagged.append(f"{repository}:{tag}")

    def save(self, named=None):
        return iter([f"tar of {self.id} as {named}".encode()])


class FakeImages:
    def __init__(self, images: dict[str, FakeImage]) -> None:
        self.by_ref, self.loaded = dict(images), []

    def get(self, reference: str) -> FakeImage:
        from docker.errors import ImageNotFound

        if reference not in self.by_ref:
            raise ImageNotFound(reference)
        return self.by_ref[reference]

    def load(self, data) -> None:
        self.loaded.append(b"".join(data))
        self.by_ref.update(LOADED)


class FakeEngine:
    def __init__(self, images: dict[str, FakeImage]) -> None:
        self.images = FakeImages(images)


HERE = FakeImage("sha256:aaa", ["pcb-runtime:1234abcd", "pcb-runtime:latest"])
LOADED = {"pcb-runtime:1234abcd": FakeImage("sha256:aaa", ["pcb-runtime:1234abcd"])}


def test_the_image_is_loaded_where_missing_and_checked_by_id():
    from pcb.orchestration.remote_executor import ensure_image

    local = FakeEngine({"pcb-runtime:latest": HERE})
    remote = FakeEngine({})
    lines: list[str] = []
    assert ensure_image(local, remote, "runtime", "e2", lines.append) == (
        "pcb-runtime:1234abcd",
        "sha256:aaa",
    )
    assert remote.images.loaded == [b"tar of sha256:aaa as pcb-runtime:1234abcd"]
    assert "loading pcb-runtime:1234abcd into e2" in lines[0]


def test_a_remote_content_tag_naming_other_content_is_refused():
    from pcb.orchestration.remote_executor import ensure_image

    local = FakeEngine({"pcb-runtime:latest": HERE})
    remote = FakeEngine({"pcb-runtime:1234abcd": FakeImage("sha256:bbb", [])})
    with pytest.raises(PcbError, match="the same content tag must mean the same image"):
        ensure_image(local, remote, "runtime", "e2", print)
    assert remote.images.loaded == []


def test_the_same_image_under_another_tag_is_only_tagged():
    from pcb.orchestration.remote_executor import ensure_image

    local = FakeEngine({"pcb-runtime:latest": HERE})
    there = FakeImage("sha256:aaa", ["pcb-runtime:latest"])
    remote = FakeEngine({"pcb-runtime:latest": there, "sha256:aaa": there})
    ensure_image(local, remote, "runtime", "e2", print)
    assert there.tagged == ["pcb-runtime:1234abcd"] and remote.images.loaded == []


def test_the_image_sent_is_this_checkouts_content_tag_not_latest():
    """Another checkout's build moved :latest to other content: the remote engine still gets
    the content tag this checkout built (issue 14's rule, on a remote engine too)."""
    from pcb.orchestration.remote_executor import ensure_image

    other = FakeImage("sha256:ccc", ["pcb-runtime:99999999", "pcb-runtime:latest"])
    ours = FakeImage("sha256:aaa", ["pcb-runtime:1234abcd"])
    local = FakeEngine({"pcb-runtime:latest": other, "pcb-runtime:1234abcd": ours})
    remote = FakeEngine({})
    reference = ensure_image(local, remote, "runtime", "e2", print, "pcb-runtime:1234abcd")
    assert reference == ("pcb-runtime:1234abcd", "sha256:aaa")
    assert remote.images.loaded == [b"tar of sha256:aaa as pcb-runtime:1234abcd"]


def test_the_router_hands_a_builds_tags_to_the_remote_executors(tmp_path):
    from pcb.orchestration import routing
    from pcb.orchestration.settings import Settings

    settings = Settings(engines=(("runtime", "ssh://someone@far-host"),))
    router = routing.executor_for(settings, tmp_path)
    router.images.update({"runtime": "pcb-runtime:1234abcd"})
    assert router.default.images["runtime"] == "pcb-runtime:1234abcd"
    remote = router.remote["runtime"]
    assert remote.local_image is not None
    from pcb.orchestration.stage import StageCall

    call = StageCall("preprocess", "runtime", ("--run", "results/demo"))
    assert remote.local_image(call) == "pcb-runtime:1234abcd"
