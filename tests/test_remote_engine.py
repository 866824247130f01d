"""Two real Docker engines: the demo with export on this host's engine and preprocess, infer,
evaluate, perf and report on a second one reached over ssh:// (marked `docker` and `remote`).

The second engine and its sshd are what `scripts/second-engine` and `scripts/ssh-engine` start
(CI runs both, as root); without them, or without the export and runtime images, the tests
skip saying which is missing. The second engine shares no file system with the orchestrating
side: its containers get named volumes only, which is checked on every container it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import commands, images
from pcb.orchestration.endpoints import Endpoint, client_for
from pcb.orchestration.executors import EngineRouter
from pcb.orchestration.owner import LABEL_CHECKOUT
from pcb.orchestration.pipeline import cpu_pipeline
from pcb.orchestration.remote_executor import RemoteExecutor, volume_names
from pcb.orchestration.routing import executor_for
from pcb.orchestration.settings import settings_from_config
from pcb.orchestration.transfer import BATCH_BYTES

pytestmark = [pytest.mark.docker, pytest.mark.remote, pytest.mark.slow]

SOCKET = os.environ.get("PCB_ENGINE2_RUN", "/run/pcb-engine2") + "/docker.sock"
SSHD = Path(os.environ.get("PCB_SSHD_DIR", "/var/lib/pcb-sshd"))
SSH = f"ssh://pcbremote@127.0.0.1:{os.environ.get('PCB_SSHD_PORT', '2222')}"
CHECKOUT = {"label": f"{LABEL_CHECKOUT}={images.PROJECT_ROOT}"}


@pytest.fixture(scope="module")
def engine2():
    """A client of the second engine, through its socket (to look at what the runs left)."""
    if not Path(SOCKET).exists():
        pytest.skip(f"no second engine at {SOCKET}: `bash scripts/second-engine` (root)")
    try:
        return client_for(Endpoint(f"unix://{SOCKET}"), timeout=60)
    except PcbError as error:
        pytest.skip(f"the second engine does not answer: {error}")


@pytest.fixture(scope="module")
def ssh_path(engine2):
    """PATH with the wrapper that hands ssh the test sshd's client config (the SDK runs the
    ssh binary, which reads no config from $HOME)."""
    wrapper = SSHD / "bin"
    if not (wrapper / "ssh").is_file():
        pytest.skip(f"no sshd for the second engine ({wrapper}/ssh): `bash scripts/ssh-engine`")
    patch = pytest.MonkeyPatch()
    patch.setenv("PATH", f"{wrapper}:{os.environ['PATH']}")
    try:
        client_for(Endpoint(SSH), timeout=60)
    except PcbError as error:
        patch.undo()
        pytest.skip(f"{SSH} does not answer: {error}")
    yield SSH
    patch.undo()


@pytest.fixture(scope="module")
def local_images():
    """This checkout's export and runtime images (their content tags: the executor runs those,
    never another checkout's :latest); the tests skip, saying how to build them, without."""
    from pcb.orchestration.checkout_images import checkout_image

    try:
        client = client_for(Endpoint("local"), timeout=60)
    except PcbError as error:
        pytest.skip(f"no local Docker engine: {error}")
    missing = [name for name in ("export", "runtime") if checkout_image(client, name) is None]
    if missing:
        pytest.skip(
            f"pcb-{' and pcb-'.join(missing)} not built from this checkout's sources: "
            "`invoke build --image export --image runtime` first"
        )
    return client


def demo_settings(**engines):
    """The demo's settings, small perf; its data/ and results/ are the working folder's."""
    config = {"batch_sizes": [1, 2], "perf_iterations": 2, "quiet": True}
    settings = settings_from_config(config, demo=True)
    return replace(settings, engines=tuple(sorted(engines.items())))


def tree(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob(pattern))
        if path.is_file()
    }


def evaluation(run: Path) -> dict:
    """The evaluation record less what names the machine and the moment."""
    record = json.loads((run / "eval" / "onnxruntime.json").read_text())
    return {k: v for k, v in record.items() if k not in ("host", "timestamp")}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, local_images, ssh_path, engine2):
    """The demo all on this host's engine, then export here and the rest over ssh:// on the
    second engine (the same demo data: demo-data is deterministic; it is copied, not remade)."""
    here, there = tmp_path_factory.mktemp("all-local"), tmp_path_factory.mktemp("two-engines")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(here)
        local = demo_settings()
        calls = cpu_pipeline(local)
        executor = executor_for(local)
        executor.run(calls[0])  # demo-data, not timed: the two-engine run copies its output
        started = time.monotonic()
        for call in calls[1:]:
            executor.run(call)
        local_s = time.monotonic() - started
        shutil.copytree(here / "data", there / "data")
        patch.chdir(there)
        remote = demo_settings(runtime=ssh_path)
        router = executor_for(remote)
        assert isinstance(router, EngineRouter)
        started = time.monotonic()
        for call in cpu_pipeline(remote)[1:]:  # no demo-data: copied above
            router.run(call)
        remote_s = time.monotonic() - started
        remote_executor = router.remote["runtime"]
        volumes = set(volume_names(remote.results_dir))
        yield {
            "local": here / "results" / "demo",
            "remote": there / "results" / "demo",
            "settings": remote,
            "executor": remote_executor,
            "volumes": volumes,
            "seconds": (local_s, remote_s),
        }
        commands.clean(remote, containers_only=True)


def test_bins_dumps_and_evaluation_match_an_all_local_run(two_runs):
    local, remote = two_runs["local"], two_runs["remote"]
    executor: RemoteExecutor = two_runs["executor"]
    sent, received = executor.sent, executor.received
    print(
        f"\ntwo-engine demo: sent {sent.files_sent} files, {sent.bytes_sent} bytes in "
        f"{sent.seconds:.1f} s; received {received.files_received} files, "
        f"{received.bytes_received} bytes in {received.seconds:.1f} s; wall time from export "
        f"to report: all-local {two_runs['seconds'][0]:.1f} s, two engines "
        f"{two_runs['seconds'][1]:.1f} s"
    )
    # Every bin and dump, and the split lists (the records beside them name a time and host).
    bins_here, bins_there = tree(local / "bins", "*.bin"), tree(remote / "bins", "*.bin")
    assert len(bins_here) > 100 and bins_here == bins_there
    assert tree(local / "bins", "*.info") == tree(remote / "bins", "*.info")
    dumps = tree(local / "dumps", "*.bin")
    assert len(dumps) > 100 and dumps == tree(remote / "dumps", "*.bin")
    assert evaluation(local) == evaluation(remote)
    assert tree(local / "model", "*.onnx") == tree(remote / "model", "*.onnx")
    compared = {p.name for p in local.glob("comparison.*")}
    assert "comparison.md" in compared and compared == {p.name for p in remote.glob("comparison.*")}
    # Preprocessing was done there: the bins (most of the bytes) never went out, they only
    # came back.
    bins_bytes = sum(len(b) for b in bins_there.values())
    data = two_runs["remote"].parent.parent / "data" / "demo" / "Market-1501-v15.09.15"
    inputs = sum(len(b) for b in tree(data).values()) + sum(
        len(b) for b in tree(remote / "model").values()
    )
    assert inputs <= sent.bytes_sent < inputs + (1 << 20)  # + the manifest and its records
    assert received.bytes_received >= bins_bytes


def test_the_second_engine_saw_volumes_only_and_named_its_host(two_runs, engine2):
    executor: RemoteExecutor = two_runs["executor"]
    stages = [a for a in executor.created if a["Config"]["Labels"].get("pcb.role") != "transfer"]
    assert {a["Config"]["Labels"]["pcb.stage"] for a in stages} == {
        "preprocess",
        "infer",
        "evaluate",
        "perf",
        "report",
    }
    for attrs in executor.created:
        assert not attrs["HostConfig"].get("Binds")
        assert {m["Type"] for m in attrs["Mounts"]} == {"volume"}, attrs["Mounts"]
        assert {m["Name"] for m in attrs["Mounts"]} <= two_runs["volumes"]
    record = json.loads((two_runs["remote"] / "eval" / "onnxruntime.json").read_text())
    assert record["host"] == engine2.info()["Name"]
    manifest = json.loads((two_runs["remote"] / "manifest.json").read_text())
    assert "export" in json.dumps(manifest) and "evaluate" in json.dumps(manifest)


def test_a_rerun_sends_and_fetches_nothing(two_runs, monkeypatch):
    monkeypatch.chdir(two_runs["remote"].parent.parent)
    executor: RemoteExecutor = two_runs["executor"]
    settings = two_runs["settings"]
    before_sent, before_received = executor.sent.bytes_sent, executor.received.bytes_received
    evaluate = next(c for c in cpu_pipeline(settings) if c.stage == "evaluate")
    executor.run(evaluate)
    assert executor.sent.bytes_sent == before_sent
    assert executor.received.bytes_received == before_received


class Cut(Exception):
    """A transfer cut off half-way (as a dropped connection or Ctrl-C would)."""


def test_an_interrupted_transfer_resumes_with_what_is_missing(
    two_runs, tmp_path, monkeypatch, ssh_path
):
    monkeypatch.chdir(tmp_path)
    settings = demo_settings(runtime=ssh_path)
    shutil.copytree(two_runs["local"].parent.parent / "data", tmp_path / "data")  # demo-data
    preprocess = next(c for c in cpu_pipeline(settings) if c.stage == "preprocess")
    batches: list[tuple[int, int]] = []

    def cut_half_way(done: int, total: int) -> None:
        batches.append((done, total))
        if done == total // 2:
            raise Cut

    executor = RemoteExecutor.for_settings(settings, Endpoint(ssh_path))
    executor.batch_bytes, executor.on_batch = 256 << 10, cut_half_way
    try:
        with pytest.raises(Cut):
            executor.run(preprocess)
        first = replace(executor.sent)
        total_batches = batches[-1][1]
        assert total_batches >= 4 and first.files_sent > 0
        # The rest in full-size batches: small ones cost a round trip each (ssh: a login).
        executor.on_batch, executor.batch_bytes = None, BATCH_BYTES
        started = time.monotonic()
        executor.run(preprocess)
        resumed = time.monotonic() - started
        second_files = executor.sent.files_sent - first.files_sent
        dataset_files = sum(1 for p in settings.dataset.rglob("*") if p.is_file())
        print(
            f"\nresume: cut after {first.files_sent} files ({first.bytes_sent} bytes) of "
            f"{total_batches} batches; the re-run sent {second_files} more "
            f"({executor.sent.bytes_sent - first.bytes_sent} bytes), the stage ran and its "
            f"outputs came back in {resumed:.1f} s"
        )
        # Every input went exactly once: nothing sent before the cut was sent again.
        assert first.files_sent + second_files == dataset_files
        # and the stage's outputs came back whole: the bins of the all-local run.
        assert tree(settings.run_dir / "bins", "*.bin") == tree(two_runs["local"] / "bins", "*.bin")
    finally:
        drop_volumes(settings)


def drop_volumes(settings) -> None:
    """This test's run volumes on the second engine (its containers are gone already)."""
    client = client_for(Endpoint(f"unix://{SOCKET}"))
    for name in volume_names(settings.results_dir):
        with contextlib.suppress(Exception):
            client.volumes.get(name).remove(force=True)


def test_a_refused_ssh_login_names_the_engine_and_stage(ssh_path):
    wrong = ssh_path.replace("pcbremote@", "nobody@")
    with pytest.raises(PcbError) as error:
        client_for(Endpoint(wrong), "infer", timeout=30)
    assert wrong in str(error.value) and "stage infer" in str(error.value)
    # ... and the check that shows why, for the user and host named.
    port = ssh_path.rsplit(":", 1)[1]
    assert f"`ssh -p {port} nobody@127.0.0.1 docker version`" in str(error.value)


def test_an_unreachable_ssh_engine_names_the_host_stage_and_check(ssh_path):
    closed = ssh_path.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    with pytest.raises(PcbError) as error:
        client_for(Endpoint(closed), "convert", timeout=30)
    text = str(error.value)
    assert text.startswith(f"cannot reach the Docker engine {closed} (for stage convert)")
    assert "`ssh -p 1 pcbremote@127.0.0.1 docker version`" in text


def test_a_failing_remote_stage_names_host_and_stage(
    tmp_path, monkeypatch, local_images, ssh_path, engine2
):
    monkeypatch.chdir(tmp_path)
    settings = demo_settings(runtime=ssh_path)
    (tmp_path / "results" / "demo").mkdir(parents=True)
    infer = next(c for c in cpu_pipeline(settings) if c.stage == "infer")  # no model: fails
    executor = RemoteExecutor.for_settings(settings, Endpoint(ssh_path))
    try:
        with pytest.raises(PcbError) as error:
            executor.run(infer)
        text = str(error.value)
        assert f"stage infer failed on {ssh_path} (host {engine2.info()['Name']})" in text
        assert f"DOCKER_HOST={ssh_path} docker run" in text
    finally:
        drop_volumes(settings)


def test_clean_leaves_nothing_of_this_checkout_on_either_engine(
    two_runs, engine2, ssh_path, monkeypatch
):
    monkeypatch.chdir(two_runs["remote"].parent.parent)
    settings = two_runs["settings"]
    assert engine2.volumes.list(filters=CHECKOUT)  # the runs left their volumes
    commands.clean(settings, containers_only=True)
    assert engine2.volumes.list(filters=CHECKOUT) == []
    assert engine2.containers.list(all=True, filters=CHECKOUT) == []
    local = client_for(Endpoint("local"))
    assert local.containers.list(all=True, filters=CHECKOUT) == []
