"""A stage container goes away with the process that started it (real engine, marked `docker`).

A driver process runs a real stage through the executor (`perf` of a tiny model with a
million iterations, in pcb-runtime:latest) the way `invoke perf` does. SIGTERM, SIGHUP and
SIGINT to the driver must stop and remove the container within seconds and end the driver
with 128 + the signal's number; after SIGKILL the container is left running and holding the
run folder's lock, and the next stage run removes it and proceeds; `invoke clean` removes such
an orphan and leaves a live owner's container alone.

Needs a running engine and pcb-runtime:latest (`invoke build --image runtime`); about a
minute. Run under `flock /tmp/pcb-docker.lock`.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import docker_executor, images, owner
from pcb.orchestration.images import PROJECT_ROOT
from pcb.orchestration.lifecycle import labelled_containers
from pcb.orchestration.spec import Roots, build_spec
from pcb.orchestration.stage import StageCall
from pcb.record.runlock import RunLock

pytestmark = pytest.mark.docker

RUNTIME = images.IMAGES["runtime"].latest
REPO = Path(__file__).resolve().parents[1]
GONE_WITHIN_S = 10.0

# What `invoke perf` does, in a process of its own: a stage through the executor.
DRIVER = """
import sys
from pathlib import Path
from pcb.orchestration.docker_executor import run_in_container
from pcb.orchestration.stage import StageCall

data, results, iterations = sys.argv[1:4]
call = StageCall("perf", "runtime", ("--run", Path(results) / "run", "--batch-sizes", "1",
    "--warmup", "0", "--iterations", iterations, "--threads", "1", "--quiet"))
run_in_container(call, data_dir=data, results_dir=results, image=sys.argv[4])
"""


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


@pytest.fixture(scope="module")
def runtime_image(client) -> str:
    from docker.errors import ImageNotFound

    try:
        client.images.get(RUNTIME)
    except ImageNotFound:
        pytest.skip(f"{RUNTIME} is not built: `invoke build --image runtime` first")
    return RUNTIME


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    """data/ and results/ made by the test's user (root in CI): the executor must make them
    writable for the container's uid itself."""
    from tiny_model import make_tiny_model

    for name in ("data", "results"):
        (tmp_path / name).mkdir()
    make_tiny_model(tmp_path / "results" / "run" / "model" / "pcb.onnx")
    return Roots.of(tmp_path / "data", tmp_path / "results")


def containers_of(client, roots: Roots) -> list:
    return labelled_containers(client, f"pcb.run={roots.results / 'run'}")


def start_driver(roots: Roots, image: str, iterations: int = 1_000_000) -> subprocess.Popen:
    """The driver, once its stage runs in the container holding the run folder's lock (the
    lock file names its holder once it is taken)."""

    def terminal_signals() -> None:
        # As in an interactive shell; a background job would start with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(roots.data), str(roots.results), str(iterations), image],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=terminal_signals,
        start_new_session=True,
    )
    lock = roots.results / "run" / ".pcb.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and '"stage": "perf' in lock.read_text()):
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            out, err = driver.communicate(timeout=30)
            pytest.fail(f"the stage did not start:\n{out.decode()}\n{err.decode()}")
        time.sleep(0.05)
    return driver


def wait_gone(client, roots: Roots, timeout: float) -> float:
    start = time.monotonic()
    while containers_of(client, roots):
        if time.monotonic() - start > timeout:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - start


def lock_is_free(run: Path) -> bool:
    lock = RunLock(run, "test")
    try:
        lock.acquire()
    except PcbError:
        return False
    lock.release()
    return True


@pytest.mark.parametrize(
    "signo", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name
)
def test_a_signal_stops_and_removes_the_stage_container(client, runtime_image, roots, signo):
    driver = start_driver(roots, runtime_image)
    try:
        [container] = containers_of(client, roots)
        assert container.status == "running"
        assert container.labels["pcb.owner.pid"] == str(driver.pid)
        assert not lock_is_free(roots.results / "run")  # the stage in the container holds it
        sent = time.monotonic()
        driver.send_signal(signo)
        gone = wait_gone(client, roots, GONE_WITHIN_S)
        _, err = driver.communicate(timeout=30)
        ended = time.monotonic() - sent
    finally:
        driver.kill()
        driver.wait()
    name = signal.Signals(signo).name
    print(
        f"\n{name}: container gone {gone:.2f} s after the signal, driver ended after {ended:.2f} s"
    )
    assert gone <= GONE_WITHIN_S, f"the container outlived {name} by {GONE_WITHIN_S} s"
    assert driver.returncode == 128 + signo, err.decode(errors="replace")
    assert (
        f"pcb: stage perf stopped by {name}: its container was stopped and removed "
        f"(exit status {128 + signo})"
    ) in err.decode()
    assert lock_is_free(roots.results / "run")


def test_after_sigkill_the_next_stage_removes_the_orphan_and_proceeds(
    client, runtime_image, roots, capsys
):
    run = roots.results / "run"
    driver = start_driver(roots, runtime_image)
    driver.kill()  # SIGKILL: no handler runs
    driver.wait()
    time.sleep(1)
    [orphan] = containers_of(client, roots)
    orphan.reload()
    assert orphan.status == "running"  # left behind, still writing results/run
    assert owner.owner_state(orphan.labels) == owner.DEAD
    with pytest.raises(PcbError, match="is in use by stage perf"):
        RunLock(run, "test").acquire()

    call = StageCall(
        "perf",
        "runtime",
        ("--run", run, "--batch-sizes", "1", "--warmup", "0", "--iterations", "2", "--quiet"),
    )
    out = io.BytesIO()
    docker_executor.run_in_container(
        call, data_dir=roots.data, results_dir=roots.results, image=runtime_image, output=out
    )
    err = capsys.readouterr().err
    assert (
        f"removed orphaned container {orphan.name} (stage perf, run {run}, running): its owner "
        f"pid {driver.pid} on {owner.Host.here().name} has gone"
    ) in err
    assert (run / "perf" / "onnxruntime.json").is_file(), out.getvalue().decode()
    assert containers_of(client, roots) == []
    assert lock_is_free(run)


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_invoke_clean_removes_orphans_and_leaves_a_live_run(client, runtime_image, roots):
    driver = start_driver(roots, runtime_image)
    driver.kill()
    driver.wait()
    [orphan] = containers_of(client, roots)
    # A run in progress: a container of this checkout whose owner (this process) is alive.
    live_spec = build_spec(StageCall("perf", "runtime"), runtime_image, roots)
    live = client.containers.create(
        **{
            **live_spec.create_kwargs(),
            "entrypoint": ["sleep", "120"],
            "command": [],
            "labels": {**live_spec.labels, **owner.owner_labels(), "pcb.run": "live"},
        }
    )
    try:
        live.start()
        listed = invoke("clean", "--dry-run", "--containers-only")
        assert listed.returncode == 0, listed.stderr
        assert f"would remove container {orphan.name} (stage perf" in listed.stdout
        assert (
            f"left container {live.name} (stage perf, run live, running): kept: its owner pid "
            f"{os.getpid()}" in listed.stdout
        )
        assert containers_of(client, roots) != []  # a dry run removes nothing

        cleaned = invoke("clean", "--containers-only")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed container {orphan.name} (stage perf" in cleaned.stdout
        assert containers_of(client, roots) == []  # nothing of the killed run is left
        live.reload()
        assert live.status == "running"
        assert lock_is_free(roots.results / "run")

        # Images: a dry run never offers what the stages run now.
        images_listed = invoke("clean", "--dry-run")
        assert images_listed.returncode == 0, images_listed.stderr
        for reference in client.images.get(runtime_image).tags:
            assert f"would remove image {reference}\n" not in images_listed.stdout + "\n"
    finally:
        live.remove(force=True)
    assert (
        client.containers.list(
            all=True, filters={"label": f"{owner.LABEL_CHECKOUT}={PROJECT_ROOT}"}
        )
        == []
    )
