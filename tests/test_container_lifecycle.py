"""Container lifecycle and least privilege without an engine: the limits and their settings,
the user a container runs as and the hand-over of root's files, owners judged alive or dead,
the signal guard, run_spec's signal, removal and out-of-memory paths against a fake client,
and what `invoke clean` would remove. tests/test_container_signals.py runs the same against
the real engine."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pcb.errors import PcbError
from pcb.orchestration import docker_executor, lifecycle, limits, owner, users
from pcb.orchestration.images import PROJECT_ROOT
from pcb.orchestration.lifecycle import SignalGuard, Signalled, StageSignalled
from pcb.orchestration.settings import settings_from_config
from pcb.orchestration.spec import ContainerSpec, Roots, build_spec
from pcb.orchestration.stage import StageCall

GIB = 1 << 30
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    for name in ("data", "results"):
        (tmp_path / name).mkdir()
    return Roots.of(tmp_path / "data", tmp_path / "results")


# ---- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("16g", 16 * GIB),
        ("512m", 512 << 20),
        ("20GiB", 20 * GIB),
        ("1.5g", 3 * GIB // 2),
        (" 8G ", 8 * GIB),
        (64 << 20, 64 << 20),
        ("0", None),
        (0, None),
        ("none", None),
        ("auto", 22118 << 20),  # 24 GiB less a tenth, in whole MiB
    ],
)
def test_memory_limit_values(value: Any, expected: int | None) -> None:
    assert limits.parse_memory_limit(value, total=24 * GIB) == expected


@pytest.mark.parametrize("value", ["lots", "16x", "-1g", True, 1.5, None, "5m"])
def test_bad_memory_limits_name_the_fix(value: Any) -> None:
    with pytest.raises(PcbError) as error:
        limits.parse_memory_limit(value, total=24 * GIB)
    message = str(error.value)
    assert repr(value) in message
    assert "16g" in message or "8g" in message
    assert "0" in message  # how to switch the limit off


def test_auto_memory_limit_reads_the_host(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684084 kB\nMemFree:        1 kB\n")
    assert limits.host_memory(meminfo) == 24684084 * 1024
    assert limits.auto_memory_limit(24684084 * 1024) == 21694 << 20
    assert limits.host_memory(tmp_path / "missing") is None
    assert limits.auto_memory_limit(None) is None  # unknown host: no limit rather than a guess


def test_docker_sizes() -> None:
    assert limits.docker_size(16 * GIB) == "16g"
    assert limits.docker_size(21694 << 20) == "21694m"
    assert limits.docker_size(3 << 10) == "3k"
    assert limits.docker_size(1000) == "1000"


def test_pids_limit_grows_with_the_cores() -> None:
    assert limits.pids_limit(2) == 4096
    assert limits.pids_limit(16) == 4096
    # 64 cores: 64 preprocessing workers with 64 BLAS threads each would not fit in 4096.
    assert limits.pids_limit(64) == 2 * 65 * 68 > 65 * 64


def test_memory_limit_setting(tmp_path: Path) -> None:
    assert settings_from_config({}).memory_limit == "auto"
    assert settings_from_config({"memory_limit": "16G"}).memory_limit == "16g"
    assert settings_from_config({"memory_limit": 0}).memory_limit == "0"
    with pytest.raises(PcbError, match=r"invoke.yaml: pcb.memory_limit = 'plenty': .* 16g"):
        settings_from_config({"memory_limit": "plenty"})


# ---- the spec ----------------------------------------------------------------------------------


def test_print_docker_carries_the_limits(roots: Roots) -> None:
    call = StageCall("preprocess", "runtime", ("--run", roots.results / "demo"))
    spec = build_spec(call, "pcb-runtime:latest", roots, uid=1000, gid=1000, memory_limit="8g")
    words = shlex.split(spec.to_docker_run())
    assert words[words.index("--cap-drop") + 1] == "ALL"
    assert words[words.index("--pids-limit") + 1] == str(limits.pids_limit())
    assert words[words.index("--memory") + 1] == "8g"
    assert words[words.index("--memory-swap") + 1] == "8g"
    kwargs = spec.create_kwargs()
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["pids_limit"] == limits.pids_limit()
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 8 * GIB


def test_no_memory_limit_when_switched_off(roots: Roots) -> None:
    spec = build_spec(StageCall("report", "runtime"), "img", roots, memory_limit="0")
    assert "--memory" not in spec.to_docker_run()
    assert "mem_limit" not in spec.create_kwargs()


def test_a_root_caller_never_runs_a_container_as_root(
    roots: Roots, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    call = StageCall("preprocess", "runtime", ("--run", roots.results / "demo"))
    # results/ of this test belongs to the test's user: root here, someone else elsewhere.
    spec = build_spec(call, "img", roots)
    owner_uid = roots.results.stat().st_uid
    expected = users.IMAGE_USER[0] if owner_uid == 0 else owner_uid
    assert spec.user.split(":")[0] == str(expected)
    line = spec.to_docker_run()
    assert "--user 0:0" not in line and "--user 0:" not in line
    # An explicit uid 0 is the same as a root caller.
    assert not build_spec(call, "img", roots, uid=0, gid=0).user.startswith("0:")


def test_run_as() -> None:
    missing = Path("/nonexistent/results")
    assert users.run_as(missing, 4321, 99) == (4321, 99)  # not root: as given
    assert users.run_as(missing, 0, 0) == users.IMAGE_USER  # root would create it
    assert users.run_as(Path("/"), 0, 0) == users.IMAGE_USER  # root owns it


@as_root
def test_a_root_caller_runs_as_the_owner_of_results(roots: Roots) -> None:
    os.chown(roots.results, 4321, 4322)
    assert users.run_as(roots.results, 0, 0) == (4321, 4322)
    os.chown(roots.results, 4321, 0)  # root's group is not kept either
    assert users.run_as(roots.results, 0, 0) == (4321, 4321)
    spec = build_spec(StageCall("report", "runtime"), "img", roots, uid=0, gid=0)
    assert spec.user == "4321:4321"


@as_root
def test_hand_over_changes_only_what_root_owns_and_follows_no_link(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "run" / "bins").mkdir(parents=True)
    (results / "run" / ".pcb.lock").write_text("{}")
    (results / "run" / "bins" / "a.bin").write_bytes(b"x")
    theirs = results / "run" / "theirs.txt"
    theirs.write_text("another user's")
    os.chown(theirs, 5555, 5555)
    outside = tmp_path / "outside.txt"
    outside.write_text("root's, outside results/")
    (results / "run" / "link").symlink_to(outside)
    (results / "run" / "dirlink").symlink_to(tmp_path, target_is_directory=True)

    changed = users.hand_over([results, tmp_path / "new" / "demo"], 4321, 4322)
    for path in (results, results / "run", results / "run" / "bins", results / "run" / ".pcb.lock"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322), path
    assert (results / "run" / "bins" / "a.bin").stat().st_uid == 4321
    assert theirs.stat().st_uid == 5555
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0  # links not followed
    assert os.lstat(results / "run" / "link").st_uid == 4321  # the link itself
    assert (tmp_path / "new" / "demo").stat().st_uid == 4321  # made, then handed over
    assert changed == 8  # results, run, bins, the lock, a.bin, both links, new/demo
    assert users.hand_over([results], 4321, 4322) == 0  # nothing of root's left
    assert users.hand_over([results], 0, 0) == 0  # never to root


@as_root
def test_prepare_folders_hands_demo_data_its_folder_only(roots: Roots) -> None:
    (roots.data / "Market").mkdir()
    demo = roots.data / "demo"
    call = StageCall("demo-data", "export", ("--out", demo), writes_data=True)
    spec = build_spec(call, "img", roots, uid=4321, gid=4321)
    docker_executor.prepare_folders(call, spec)
    assert demo.stat().st_uid == 4321 and roots.results.stat().st_uid == 4321
    assert roots.data.stat().st_uid == 0 and (roots.data / "Market").stat().st_uid == 0


# ---- owners ------------------------------------------------------------------------------------


def _labels(pid: int, host: owner.Host | None = None, started: str | None = None) -> dict:
    host = host or owner.Host.here()
    return {
        owner.LABEL_PID: str(pid),
        owner.LABEL_HOST: host.label,
        owner.LABEL_STARTED: owner.start_time(pid) if started is None else started,
    }


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_owner_states() -> None:
    here = owner.Host.here()
    assert here.boot and owner.owner_labels()[owner.LABEL_HOST] == here.label
    assert owner.owner_state(_labels(os.getpid())) == owner.ALIVE
    assert owner.owner_state(_labels(_dead_pid())) == owner.DEAD
    # This pid, but a process that started at another time: the pid was reused.
    assert owner.owner_state(_labels(os.getpid(), started="1")) == owner.DEAD
    # Started before this host's last reboot: dead whatever holds that pid now.
    rebooted = owner.Host(here.name, "00000000-0000-0000-0000-000000000000")
    assert owner.owner_state(_labels(os.getpid(), host=rebooted)) == owner.DEAD
    # Another host's: not ours to judge.
    elsewhere = owner.Host("another-host", here.boot)
    assert owner.owner_state(_labels(_dead_pid(), host=elsewhere)) == owner.UNKNOWN
    assert owner.owner_state({}) == owner.UNKNOWN  # an older pcb's container, or by hand


def test_a_killed_but_unreaped_owner_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        labels = _labels(child.pid)
        assert owner.owner_state(labels) == owner.ALIVE
        child.kill()
        deadline = time.monotonic() + 10
        while owner.pid_exists(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A zombie until its parent waits: os.kill(pid, 0) still succeeds.
        os.kill(child.pid, 0)
        assert owner.owner_state(labels) == owner.DEAD
    finally:
        child.kill()
        child.wait()


def test_start_time_reads_past_odd_command_names(tmp_path: Path) -> None:
    stat = tmp_path / "42" / "stat"
    stat.parent.mkdir()
    fields = ["S"] + [str(n) for n in range(4, 22)] + ["123456"] + ["0"] * 30
    stat.write_text("42 (a) b (c)) " + " ".join(fields))
    assert owner.start_time(42, proc=tmp_path) == "123456"
    assert owner.start_time(43, proc=tmp_path) == ""


# ---- the signal guard --------------------------------------------------------------------------


def test_signal_guard_raises_once_then_records_and_restores() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SignalGuard() as guard:
        with pytest.raises(Signalled) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert caught.value.signo == signal.SIGTERM and guard.signo == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGHUP)  # while cleaning up: recorded, not raised
        time.sleep(0.05)
        assert guard.signo == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_guard_leaves_an_ignored_signal_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with SignalGuard() as guard:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            assert guard.signo is None
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_stage_signalled_exit_status() -> None:
    stopped = StageSignalled("preprocess", signal.SIGTERM)
    assert isinstance(stopped, SystemExit) and stopped.code == 143
    assert stopped.message == (
        "stage preprocess stopped by SIGTERM: its container was stopped and removed "
        "(exit status 143)"
    )
    assert StageSignalled("perf", signal.SIGINT).code == 130
    assert StageSignalled("perf", signal.SIGHUP).code == 129


# ---- run_spec against a fake client -------------------------------------------------------------


class FakeContainer:
    def __init__(self, events: list, logs: Any, state: dict | None = None) -> None:
        self.id = "c0ffee" * 8
        self.events = events
        self._logs = logs
        self.attrs = {"State": state or {}}

    def start(self) -> None:
        self.events.append("start")

    def logs(self, stream: bool, follow: bool) -> Any:
        return self._logs()

    def wait(self, timeout: float | None = None) -> dict:
        self.events.append(("wait", timeout))
        return {"StatusCode": 137 if self.attrs["State"].get("OOMKilled") else 0}

    def kill(self, signal: int) -> None:
        self.events.append(("kill", signal))

    def reload(self) -> None:
        self.events.append("reload")

    def remove(self, force: bool) -> None:
        self.events.append(("remove", force))


class FakeClient:
    def __init__(self, container: FakeContainer) -> None:
        self.created: list[dict] = []
        client = self

        class Containers:
            def create(self, **kwargs: Any) -> FakeContainer:
                client.created.append(kwargs)
                container.events.append("create")
                return container

        self.containers = Containers()


@pytest.mark.parametrize(
    "signo", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name
)
@pytest.mark.usefixtures("signals_as_on_a_terminal")
def test_a_signal_stops_and_removes_the_container(
    signo: int, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list = []

    def logs():
        yield b"started\n"
        os.kill(os.getpid(), signo)
        time.sleep(5)  # the handler raises in here
        yield b"not reached\n"

    container = FakeContainer(events, logs)
    client = FakeClient(container)
    before = signal.getsignal(signo)
    out = io.BytesIO()
    spec = ContainerSpec("img", ("perf",), stage="perf", labels={"pcb.stage": "perf"})
    with pytest.raises(StageSignalled) as stopped:
        docker_executor.run_spec(spec, client, out)
    assert stopped.value.code == 128 + signo
    assert events == [
        "create",
        "start",
        ("kill", signo),
        ("wait", docker_executor.STOP_GRACE_S),
        ("remove", True),
    ]
    assert out.getvalue() == b"started\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"pcb: stage perf stopped by {signal.Signals(signo).name}: its container "
        f"was stopped and removed (exit status {128 + signo})"
    ]
    assert signal.getsignal(signo) is before
    # The container carries its owner: this process, on this host.
    labels = client.created[0]["labels"]
    assert labels["pcb.owner.pid"] == str(os.getpid())
    assert labels["pcb.owner.host"] == owner.Host.here().label
    assert labels["pcb.stage"] == "perf"
    assert client.created[0]["name"].startswith("pcb-perf-")


def test_an_oom_kill_names_the_stage_the_limit_and_the_setting() -> None:
    events: list = []
    container = FakeContainer(events, lambda: iter([b"allocating\n"]), {"OOMKilled": True})
    spec = ContainerSpec("img", ("infer",), stage="infer", memory_limit=512 << 20)
    with pytest.raises(PcbError) as error:
        docker_executor.run_spec(spec, FakeClient(container), io.BytesIO())
    message = str(error.value)
    assert "stage infer ran out of memory and was killed (exit status 137)" in message
    assert "512 MiB (512m)" in message
    assert "memory_limit" in message and "invoke.yaml" in message and "0 for no limit" in message
    assert events[-1] == ("remove", True)


def test_a_normal_run_returns_its_status_and_removes_the_container() -> None:
    events: list = []
    container = FakeContainer(events, lambda: iter([b"ok\n"]))
    spec = ContainerSpec("img", ("report",), stage="report")
    assert docker_executor.run_spec(spec, FakeClient(container), io.BytesIO()) == 0
    assert events == ["create", "start", ("wait", None), "reload", ("remove", True)]


# ---- what `invoke clean` removes ----------------------------------------------------------------


class Listed:
    """A container as containers.list() returns it."""

    def __init__(
        self, name: str, labels: dict, running: bool = False, stopped_ago_s: float = 0
    ) -> None:
        self.id = name.ljust(64, "0")
        self.name = name
        self.labels = labels
        self.status = "running" if running else "exited"
        finished = datetime.now(timezone.utc) - timedelta(seconds=stopped_ago_s)
        self.attrs = {
            "State": {
                "Running": running,
                "FinishedAt": "0001-01-01T00:00:00Z"
                if running
                else finished.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"),
            },
            "Created": "2026-01-01T00:00:00.5Z",
        }
        self.removed = False

    def remove(self, force: bool) -> None:
        self.removed = True

    def reload(self) -> None:
        pass


class Engine:
    def __init__(self, containers: list[Listed]) -> None:
        engine = self
        self.all = containers

        class Containers:
            def list(self, all: bool, filters: dict, sparse: bool = False) -> list[Listed]:  # noqa: A002
                key, _, value = filters["label"].partition("=")
                return [
                    c
                    for c in engine.all
                    if key in c.labels and (not value or c.labels[key] == value)
                ]

        self.containers = Containers()


def _stage(checkout: Path | str = PROJECT_ROOT, **extra: str) -> dict:
    return {"pcb.stage": "perf", "pcb.run": "/r/demo", "pcb.checkout": str(checkout), **extra}


def test_clean_removes_orphans_and_old_leftovers_only() -> None:
    alive, dead = _labels(os.getpid()), _labels(_dead_pid())
    other_host = _labels(_dead_pid(), host=owner.Host("elsewhere", "x"))
    containers = {
        "orphan": Listed("orphan", _stage(**dead), running=True),
        "orphan-stopped": Listed("orphan-stopped", _stage(**dead), stopped_ago_s=5),
        "live": Listed("live", _stage(**alive), running=True),
        "live-stopped": Listed("live-stopped", _stage(**alive), stopped_ago_s=300),
        "other-host": Listed("other-host", _stage(**other_host), running=True),
        "old-pcb-stopped": Listed("old-pcb-stopped", {"pcb.stage": "infer"}, stopped_ago_s=300),
        "old-pcb-just-stopped": Listed("old-pcb-just", {"pcb.stage": "infer"}, stopped_ago_s=5),
        "old-pcb-running": Listed("old-pcb-running", {"pcb.stage": "infer"}, running=True),
        "other-checkout": Listed("other-checkout", _stage("/elsewhere", **dead), running=True),
        "not-pcb": Listed("not-pcb", {"app": "db"}, stopped_ago_s=300),
    }
    engine = Engine(list(containers.values()))

    removed, kept = lifecycle.clean_containers(engine, PROJECT_ROOT, dry_run=True)
    assert not any(c.removed for c in containers.values())  # a dry run removes nothing
    assert sorted(c.name for c in removed) == ["old-pcb-stopped", "orphan", "orphan-stopped"]

    removed, kept = lifecycle.clean_containers(engine, PROJECT_ROOT)
    gone = sorted(name for name, c in containers.items() if c.removed)
    assert gone == ["old-pcb-stopped", "orphan", "orphan-stopped"]
    reasons = {c.name: c.reason for c in kept}
    assert (
        reasons["live"]
        == f"kept: its owner pid {os.getpid()} on {owner.Host.here().name} is running"
    )
    assert "another host" in reasons["other-host"]
    assert "still running" in reasons["old-pcb-running"]
    assert "under a minute" in reasons["old-pcb-just"]
    assert "other-checkout" not in reasons and "not-pcb" not in reasons
    dead_reason = next(c.reason for c in removed if c.name == "orphan")
    assert (
        dead_reason == f"its owner pid {dead[owner.LABEL_PID]} on {owner.Host.here().name} has gone"
    )


def test_the_sweep_before_a_stage_removes_this_checkouts_orphans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = _labels(_dead_pid())
    orphan = Listed("orphan", _stage(**dead), running=True)
    live = Listed("live", _stage(**_labels(os.getpid())), running=True)
    elsewhere = Listed("elsewhere", _stage("/other/checkout", **dead), running=True)
    removed = lifecycle.remove_orphans(Engine([orphan, live, elsewhere]), PROJECT_ROOT)
    assert [c.name for c in removed] == ["orphan"]
    assert orphan.removed and not live.removed and not elsewhere.removed
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("removed orphaned container orphan (stage perf, run /r/demo, running)")
    assert "has gone" in line


class Image:
    def __init__(self, id_: str, tags: list[str], labels: dict | None = None) -> None:
        self.id, self.tags, self.labels = id_, tags, labels or {}


def test_stale_images_keep_latest_current_and_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    from docker.errors import ImageNotFound

    from pcb.orchestration import images

    base = Image("sha256:base", ["pcb-base:bookworm-1"])
    current_tag = images.content_tag("runtime", base.id)
    current = Image("sha256:cur", [current_tag])
    latest = Image("sha256:lat", ["pcb-runtime:latest", "pcb-runtime:fromother"])
    old = Image("sha256:old", ["pcb-runtime:0123456789ab"])
    replaced = Image("sha256:dangling", [], {"pcb.image": "runtime"})
    foreign = Image("sha256:dangling2", [], {"pcb.image": "someone-elses"})
    removed: list[str] = []

    class Images:
        def get(self, reference: str) -> Image:
            if reference == "pcb-runtime:latest":
                return latest
            raise ImageNotFound(reference)

        def list(self, name: str | None = None, filters: dict | None = None) -> list[Image]:
            if filters:
                return [replaced, foreign]
            return {
                "pcb-runtime": [current, latest, old],
                "pcb-base": [base],
            }.get(name or "", [])

        def remove(self, reference: str, noprune: bool) -> None:
            removed.append(reference)

    class Client:
        images = Images()

    assert lifecycle.stale_images(Client(), ["runtime"]) == [
        "pcb-runtime:0123456789ab",
        replaced.id,
    ]
    monkeypatch.setattr(lifecycle, "stale_images", lambda client, bases=(): ["pcb-runtime:old"])
    assert lifecycle.clean_images(Client(), dry_run=True) == (["pcb-runtime:old"], [])
    assert removed == []
    assert lifecycle.clean_images(Client()) == (["pcb-runtime:old"], [])
    assert removed == ["pcb-runtime:old"]


def test_clean_report_lines() -> None:
    report = lifecycle.CleanReport(dry_run=True)
    assert report.lines() == ["nothing to clean"]
    report.removed_images = ["pcb-runtime:old"]
    assert report.lines() == ["would remove image pcb-runtime:old"]


def test_a_container_removed_between_listing_and_inspection_is_skipped() -> None:
    """The engine lists a stage's container, the stage ends and removes it, the inspection
    answers 404: the others are still returned (docker-py's own full listing raised)."""
    from docker.errors import NotFound

    class Gone(Listed):
        def reload(self) -> None:
            raise NotFound("No such container")

    stage = _stage(**_labels(os.getpid()))
    engine = Engine([Listed("a", stage), Gone("gone", stage), Listed("b", stage)])
    found = lifecycle.labelled_containers(engine, "pcb.stage")
    assert [c.name for c in found] == ["a", "b"]
