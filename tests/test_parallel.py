"""Platforms in parallel (parallel.py, pipeline.split_plan), fast: the split of `invoke full
--chip --trt` into head, chains and tail, the grouping of chains by engine, the manifest merge
under threads, the chains' threads (overlap, the first failure stopping the others, the
prefixed output), and the engine's refusal of a missing device or folder read from its own
words (tests/fixtures/docker_missing_host_path.txt)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration import parallel
from pcb.orchestration.executors import EngineRouter
from pcb.orchestration.pipeline import full_pipeline, split_plan
from pcb.orchestration.remote_executor import RemoteExecutor, refused_host_path
from pcb.orchestration.settings import settings_from_config
from pcb.record.manifest import merge_entries, read_manifest

FIXTURE = Path(__file__).parent / "fixtures" / "docker_missing_host_path.txt"
PUBLIC_BIND = Path(__file__).parent / "fixtures" / "docker_missing_bind_source_public.txt"


def chip_trt_settings(**engines):
    settings = settings_from_config({"chip": "310P3", "trt": True}, demo=True)
    return replace(settings, engines=tuple(sorted(engines.items())))


def backend(call) -> str:
    args = [str(a) for a in call.args]
    return args[args.index("--backend") + 1] if "--backend" in args else ""


def test_full_chip_trt_splits_into_head_three_chains_and_tail():
    calls = full_pipeline(chip_trt_settings())
    plan = split_plan(calls)
    assert [c.stage for c in plan.head] == ["demo-data", "export", "preprocess"]
    chains = {chain.name: chain.calls for chain in plan.chains}
    assert [c.stage for c in chains["ascend"]] == ["convert", "infer", "evaluate", "perf"]
    assert backend(chains["ascend"][2]) == "Ascend310P3-ais_bench"
    assert [c.stage for c in chains["tensorrt"]] == ["trt-perf", "trt-infer", "evaluate"]
    assert [(c.stage, backend(c)) for c in chains["cpu"]] == [
        ("infer", "onnxruntime"),
        ("evaluate", "onnxruntime"),
    ]
    # parity needs onnxruntime's evaluation: after the join, with the report.
    assert [c.stage for c in plan.tail] == ["parity", "parity", "report"]
    assert sorted(map(repr, plan.calls())) == sorted(map(repr, calls))  # nothing lost


class FakeRemote:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint


def test_chains_group_by_the_engine_of_their_platform_image():
    calls = full_pipeline(chip_trt_settings())
    plan = split_plan(calls)
    npu = EngineRouter(object(), {"cann": FakeRemote("ssh://u@npu-host")})  # type: ignore[arg-type]
    groups = parallel.group_chains(plan, npu)
    assert [g.label for g in groups] == ["ascend@ssh://u@npu-host", "tensorrt+cpu@local"]
    # cann and tensorrt on one remote engine: one group there, and the runtime (cpu chain) here.
    same = EngineRouter(object(), {"cann": FakeRemote("x"), "tensorrt": FakeRemote("x")})  # type: ignore[arg-type]
    assert len(parallel.group_chains(plan, same)) == 2  # runtime (cpu chain) stays local
    alone = parallel.group_chains(plan, object())
    assert len(alone) == 1 and alone[0].engine == "local"


def test_two_threads_merging_entries_at_once_lose_nothing(tmp_path: Path):
    root = tmp_path / "run"
    root.mkdir()
    merge_entries(root, {"export": {"status": "complete"}})

    def merge(prefix: str) -> None:
        for number in range(40):
            merge_entries(root, {f"{prefix}-{number}": {"status": "complete"}}, {prefix: number})

    threads = [threading.Thread(target=merge, args=(name,)) for name in ("npu", "trt")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest = read_manifest(root)
    assert manifest is not None
    expected = {"export"} | {f"{p}-{n}" for p in ("npu", "trt") for n in range(40)}
    assert set(manifest["stages"]) == expected
    assert manifest["inputs"] == {"npu": 39, "trt": 39}
    assert manifest["run"] == str(root)


def test_a_merge_into_a_run_without_manifest_takes_the_far_sides_whole(tmp_path: Path):
    there = {"schema": 1, "run": "/results/demo", "created": "x", "updated": "x"}
    there |= {"inputs": {"checkpoint": 1}, "stages": {"preprocess": {"status": "complete"}}}
    merge_entries(tmp_path, {"preprocess": there["stages"]["preprocess"]}, {}, template=there)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"] == there["stages"] and manifest["inputs"] == there["inputs"]
    assert manifest["run"] == str(tmp_path)  # where the run is now, not the volume's path


class Calls:
    """An executor whose calls sleep, fail on demand, and can be stopped (a fake engine)."""

    name = "docker"

    def __init__(self, fail: str | None = None, seconds: float = 0.3) -> None:
        self.fail, self.seconds = fail, seconds
        self.killed = threading.Event()
        self.ran: list[str] = []
        self.remote = {"cann": FakeRemote("unix:///engine2")}

    def is_local(self, call) -> bool:
        return call.image not in self.remote

    def run(self, call) -> None:
        print(f"==> {call.stage}\nprogress 1/1")
        self.ran.append(f"{call.stage}:{backend(call)}")
        if call.stage == self.fail:
            raise PcbError(f"stage {call.stage} failed with exit status 3")
        if self.killed.wait(self.seconds):
            raise PcbError(f"stage {call.stage} failed with exit status 137")


def chains_of(executor):
    plan = split_plan(full_pipeline(chip_trt_settings()))
    return parallel.group_chains(plan, executor)


def test_chains_on_two_engines_overlap_and_prefix_their_lines(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executor = Calls()
    groups = chains_of(executor)
    started = time.monotonic()
    outcome = parallel.run_groups(groups, executor, executor.killed.set)
    wall = time.monotonic() - started
    assert not outcome.errors
    # 4 Ascend stages beside 5 TensorRT + CPU ones of 0.3 s: about 1.5 s, not 2.7 s.
    assert parallel.overlap_s(outcome.times) > 0.8
    assert wall < 2.4
    out = capsys.readouterr().out.splitlines()
    assert "[ascend@unix:///engine2] ==> convert" in out
    assert "[tensorrt+cpu@local] ==> trt-perf" in out
    assert all(line.startswith("[") for line in out if "progress" in line or "==>" in line)


def test_the_first_failure_stops_the_other_chain_and_names_chain_engine_stage(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    executor = Calls(fail="convert", seconds=5.0)
    stopped = []

    def stop() -> None:
        stopped.append(time.monotonic())
        executor.killed.set()

    started = time.monotonic()
    outcome = parallel.run_groups(chains_of(executor), executor, stop)
    assert time.monotonic() - started < 3  # the TensorRT stage of 5 s was stopped
    assert outcome.first == "ascend@unix:///engine2" and len(stopped) >= 1
    message = parallel.failure_message(outcome)
    assert message.startswith("chain ascend on unix:///engine2, stage convert: stage convert")
    assert "[tensorrt+cpu@local] stopped" in message
    assert "trt-infer:" not in executor.ran  # no further stage started


def test_run_plan_sequential_on_one_engine_says_why(capsys, tmp_path, monkeypatch):
    from pcb.orchestration.commands import run_plan

    monkeypatch.chdir(tmp_path)
    executor = Calls(seconds=0)
    executor.remote = {}
    calls = full_pipeline(chip_trt_settings())
    run_plan(calls, EngineRouter(executor, {}))  # type: ignore[arg-type]
    assert executor.ran == [f"{c.stage}:{backend(c)}" for c in calls]  # today's order
    assert "one after the other on one engine" in capsys.readouterr().out


def cli_outputs(fixture: Path) -> list[str]:
    """Each command's stderr in a fixture of docker CLI output: from one `docker: ` line to
    the next (comment lines left out)."""
    outputs: list[str] = []
    for line in fixture.read_text().splitlines():
        if line.startswith("docker: "):
            outputs.append(line)
        elif outputs and not line.startswith("#"):
            outputs[-1] += "\n" + line
    return outputs


def test_the_engines_refusals_are_read_from_its_own_words():
    outputs = cli_outputs(FIXTURE)
    assert len(outputs) == 4  # two commands, each by the docker 28 and the docker 20.10 CLI
    for device, folder in (outputs[0:2], outputs[2:4]):
        assert refused_host_path(device) == ("device", "/dev/davinci0")
        assert refused_host_path(folder) == ("folder", "/usr/local/Ascend/driver")
    assert refused_host_path("No such image: pcb-cann:latest") is None


def test_an_older_engines_bind_refusal_ends_in_a_full_stop_that_is_not_the_paths():
    outputs = cli_outputs(PUBLIC_BIND)
    assert refused_host_path(outputs[0]) == ("folder", "/Users/krinkle/Documents/.git")
    assert refused_host_path(outputs[1]) == ("folder", "/app")


def test_a_refusal_names_host_stage_device_and_the_fix():
    from pcb.orchestration.argv import convert_call
    from pcb.orchestration.endpoints import Endpoint

    executor = RemoteExecutor(Endpoint("ssh://u@gpu-host"))
    executor._host = "gpu-host"
    line = cli_outputs(FIXTURE)[0]
    message = executor._refusal(convert_call(chip_trt_settings()), Exception(line))
    assert "stage convert cannot run on the engine ssh://u@gpu-host (host gpu-host)" in message
    assert "no device /dev/davinci0" in message and "npu-smi info" in message
    assert "--engine cann=" in message


@pytest.mark.parametrize("text", ["a\nb\n", "a\rb\n", "partial"])
def test_prefixed_lines_come_out_whole(text):
    import io

    target = io.StringIO()
    labels: dict[int, str] = {}
    lines = parallel._Lines(target, labels, threading.Lock())

    def work() -> None:
        labels[threading.get_ident()] = "x@y"
        lines.write(text)
        lines.finish(threading.get_ident())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert all(part.startswith("[x@y] ") for part in target.getvalue().splitlines() if part)


def test_the_dry_run_shows_the_chains_as_parallel_groups_with_their_engines(tmp_path: Path):
    from pcb.orchestration.dry_run import describe_plan

    settings = chip_trt_settings(cann="ssh://u@npu-host", tensorrt="ssh://u@gpu-host")
    lines = describe_plan(full_pipeline(settings), settings, host_root=tmp_path)
    titles = [line for line in lines if not line.startswith(" ") and not line.startswith("[")]
    assert "[ascend@ssh://u@npu-host] (in parallel)" in lines
    assert "[tensorrt@ssh://u@gpu-host] (in parallel)" in lines
    assert "[cpu@local] (in parallel)" in lines
    assert titles[-2:] == ["after the chains join:", "dry run: nothing ran."]
    convert = next(line for line in lines if "] convert (" in line)
    assert convert.startswith("  [4/15] convert (pcb-cann on ssh://u@npu-host")
    # The NPU stages run on the NPU host: this host (no /dev/davinci*) is not blamed.
    assert "This host lacks" not in lines[-1]
    # All on this host's engine: the old listing, and this host's lack is said.
    alone = chip_trt_settings()
    lines = describe_plan(full_pipeline(alone), alone, host_root=tmp_path)
    assert not any("(in parallel)" in line for line in lines)
    assert "This host lacks what the NPU stages need" in lines[-1]


@pytest.mark.usefixtures("signals_as_on_a_terminal")
def test_ctrl_c_stops_both_chains(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from pcb.orchestration.lifecycle import StageSignalled

    monkeypatch.chdir(tmp_path)
    executor = Calls(seconds=10.0)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(StageSignalled) as stopped:
        parallel.run_groups(chains_of(executor), executor, executor.killed.set)
    assert stopped.value.code == 128 + signal.SIGINT
    assert time.monotonic() - started < 5  # both 10 s stages were stopped, not waited for
    assert executor.killed.is_set()
    assert [t for t in threading.enumerate() if "@" in t.name] == []  # every chain ended
    assert "every chain's containers were stopped" in capsys.readouterr().err


class SlowToStop(Calls):
    """Stages of one image take a second to end once killed (a container's stop grace)."""

    def __init__(self, slow_image: str) -> None:
        super().__init__(seconds=10.0)
        self.slow_image = slow_image

    def run(self, call) -> None:
        try:
            super().run(call)
        finally:
            if call.image == self.slow_image and self.killed.is_set():
                time.sleep(1.0)


@pytest.mark.parametrize("slow_image", ["cann", "tensorrt"])
@pytest.mark.usefixtures("signals_as_on_a_terminal")
def test_ctrl_c_returns_only_after_every_chain_ended(slow_image, tmp_path, monkeypatch):
    """A Ctrl-C that lands while the main thread waits must not count a running chain as
    ended (python/cpython#90882: an interrupted Thread.join marks the thread stopped, and
    the next join returns at once), whichever chain is the slow one to stop."""
    import os
    import signal

    from pcb.orchestration.lifecycle import StageSignalled

    monkeypatch.chdir(tmp_path)
    executor = SlowToStop(slow_image)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(StageSignalled):
        parallel.run_groups(chains_of(executor), executor, executor.killed.set)
    assert [t.name for t in threading.enumerate() if "@" in t.name] == []


class Probed:
    """A remote executor whose host lacks the NPU: its pre-flight refuses."""

    endpoint = "ssh://u@gpu-host"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def preflight(self, calls) -> None:
        self.asked += [call.stage for call in calls]
        raise PcbError("stage convert cannot run on the engine ssh://u@gpu-host: no device")


def test_a_remote_npu_host_is_probed_before_any_stage_runs(tmp_path, monkeypatch):
    from pcb.orchestration.commands import run_calls

    monkeypatch.chdir(tmp_path)
    settings = settings_from_config({"chip": "310P3"}, demo=True)
    local = Calls(seconds=0)
    remote = Probed()
    router = EngineRouter(local, {"cann": remote})  # type: ignore[dict-item]
    with pytest.raises(PcbError, match="cannot run on the engine ssh://u@gpu-host"):
        run_calls(settings, full_pipeline(settings), executor=router, host_root=tmp_path)
    assert local.ran == []  # not even demo-data ran
    # It was asked about the calls that run there, the NPU ones among them.
    assert remote.asked and {"convert", "infer", "perf"} <= set(remote.asked)


class FarSide:
    """A transfer helper over a dict of files (container path -> bytes): what download uses."""

    where, stage = "unix:///engine2", "convert"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def listing(self, roots):
        from pcb.record.digest import bytes_digest

        return {
            path: (len(data), bytes_digest(data))
            for path, data in self.files.items()
            if any(path.startswith(root.rstrip("/") + "/") for root in roots)
        }

    def pack(self, paths):
        import io
        import tarfile

        def tar_of(files: dict[str, bytes]) -> bytes:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(name.lstrip("/"))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            return buffer.getvalue()

        inner = tar_of({path: self.files[path] for path in paths})
        return [tar_of({"pack.tar": inner})]  # get_archive wraps the pack in a tar


def test_a_fetch_brings_what_the_stage_wrote_never_an_old_copy_over_a_newer_file(tmp_path):
    from pcb.orchestration.transfer import Root, download, local_listing

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "tensorrt-fp16.json").write_text("old")
    (run / "manifest.json").write_text("{}")
    roots = [Root(run, "/results/run")]
    sent = local_listing(roots)  # what the upload saw and sent
    far = FarSide(
        {
            "/results/run/eval/tensorrt-fp16.json": b"old",  # our copy, untouched there
            "/results/run/manifest.json": b'{"far": 1}',
            "/results/run/model/om/pcb_bs1.om": b"om",  # what the stage wrote
        }
    )
    # Meanwhile the TensorRT chain here rewrote its evaluation.
    (run / "eval" / "tensorrt-fp16.json").write_text("new")
    stats = download(far, roots, keep=sent, skip=["/results/run/manifest.json"])  # type: ignore[arg-type]
    assert (run / "model" / "om" / "pcb_bs1.om").read_bytes() == b"om"
    assert (run / "eval" / "tensorrt-fp16.json").read_text() == "new"  # not put back
    assert (run / "manifest.json").read_text() == "{}"  # merged by entries, not copied
    assert stats.files_received == 1


def test_overlap_counts_each_moment_once_however_many_chains_ran() -> None:
    stage = parallel.StageTime
    three = [stage(c, "x", "e", 10.0, 11.0) for c in ("a", "b", "c")]
    assert parallel.overlap_s(three) == pytest.approx(1.0)  # summed pairwise: 3.0
    apart = [stage("a", "x", "e", 0.0, 1.0), stage("b", "y", "e", 1.0, 2.0)]
    assert parallel.overlap_s(apart) == 0.0
    one_chain = [stage("a", "x", "e", 0.0, 2.0), stage("a", "y", "e", 1.0, 3.0)]
    assert parallel.overlap_s(one_chain) == 0.0
    partly = [stage("a", "x", "e", 0.0, 4.0), stage("b", "y", "e", 1.0, 2.0)]
    partly += [stage("c", "z", "e", 1.5, 3.0), stage("b", "w", "e", 5.0, 6.0)]
    assert parallel.overlap_s(partly) == pytest.approx(2.0)  # 1.0-3.0
