"""The Ascend stages wired in: settings, `invoke full --chip` order and arguments, container specs
of the cann stages, the dry run, the pre-flight, and the whole --chip path on this host with the
tool doubles (tests/test_ascend_container.py runs it in containers)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from ascend_helpers import DOUBLES, REAL, use_doubles

from pcb.cli.parser import build_parser
from pcb.errors import PcbError
from pcb.orchestration.argv import (
    convert_call,
    import_results_call,
    parity_call,
    stage_call,
)
from pcb.orchestration.docker_executor import container_spec, docker_run_command
from pcb.orchestration.dry_run import describe_plan
from pcb.orchestration.executors import LocalExecutor
from pcb.orchestration.pipeline import full_pipeline
from pcb.orchestration.preflight import check_npu_hosts, resolve_auto_chip
from pcb.orchestration.settings import settings_from_config
from pcb.orchestration.spec import NPU_DCMI, NPU_DRIVER, NPU_INSTALL_INFO

PROJECT = Path(__file__).resolve().parents[1]


def fake_ascend_host(root: Path, ids=(0,), smi: Path | None = None) -> Path:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for name in [f"davinci{i}" for i in ids] + ["davinci_manager", "devmm_svm", "hisi_hdc"]:
        (root / "dev" / name).touch()
    (root / NPU_DRIVER.lstrip("/")).mkdir(parents=True)
    (root / NPU_DCMI.lstrip("/")).mkdir(parents=True)
    target = root / "usr/local/sbin/npu-smi"
    target.parent.mkdir(parents=True)
    if smi is not None:
        target.symlink_to(smi)
    else:
        target.touch()
    return root


# ---- settings ----------------------------------------------------------------------------------


def test_ascend_settings():
    settings = settings_from_config(
        {"chip": "ascend310p3", "devices": [0, 1], "npu_loop": 50}, aoe=True, devices="2,3"
    )
    assert settings.chip == "310P3" and settings.devices == (2, 3) and settings.aoe is True
    assert settings.npu_loop == 50 and settings.parity_threshold == 0.99
    assert settings_from_config({}).chip == ""  # no chip: no NPU stage
    assert settings_from_config({"chip": "auto"}).chip == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"chip": "710"}, r"pcb.chip = '710': unknown Ascend chip '710': expected one of 310,"),
        ({"devices": "0,x"}, r"pcb.devices = '0,x': NPU device id 'x'"),
        ({"aoe": "yes"}, r"pcb.aoe = 'yes': expected true or false"),
        ({"parity_threshold": 2}, r"pcb.parity_threshold = 2: expected a number in \(0, 1\]"),
        ({"npu_loop": 0}, r"pcb.npu_loop = 0: expected an integer >= 1"),
        ({"aoe": True, "dynamic": True}, "AOE tunes static models only"),
    ],
)
def test_bad_ascend_settings(overrides, message):
    with pytest.raises(PcbError, match=message):
        settings_from_config({}, **overrides)


def test_invoke_yaml_keys_are_all_known():
    from invoke.config import Config

    config = Config(project_location=str(PROJECT))
    config.load_project()
    settings = settings_from_config(dict(config["pcb"]))
    assert settings.chip == "" and settings.devices == (0,)


# ---- the pipeline ------------------------------------------------------------------------------


def chip_settings(**overrides):
    return settings_from_config(
        {"chip": "310P3", "batch_sizes": [1, 4], "infer_batch_size": 16, **overrides}
    )


def test_full_pipeline_with_a_chip():
    calls = full_pipeline(chip_settings())
    assert [(c.stage, c.image, c.npu_devices) for c in calls] == [
        ("export", "export", ()),
        ("preprocess", "runtime", ()),
        ("convert", "cann", ()),
        ("infer", "cann", (0,)),
        ("evaluate", "runtime", ()),
        ("infer", "runtime", ()),
        ("evaluate", "runtime", ()),
        ("parity", "runtime", ()),
        ("perf", "cann", (0,)),
        ("report", "runtime", ()),
    ]
    convert = calls[2].argv()
    assert convert[convert.index("--batch-sizes") + 1] == "1,4,16"  # perf + infer batch sizes
    assert calls[4].argv()[-2:] == ["--backend", "Ascend310P3-ais_bench"]
    assert calls[6].argv()[-2:] == ["--backend", "onnxruntime"]
    assert calls[7].argv() == [
        "parity", "--run", "results/market", "--backend", "Ascend310P3-ais_bench",
        "--reference", "onnxruntime", "--threshold", "0.99",
    ]  # fmt: skip


def test_aoe_devices_and_demo():
    settings = chip_settings(aoe=True, devices="2,3", demo=True, npu_loop=7, npu_warmup=1)
    calls = full_pipeline(settings)
    stages = [c.stage for c in calls]
    assert stages[:4] == ["demo-data", "export", "preprocess", "convert"]
    assert calls[3].npu_devices == (2,) and "--aoe" in calls[3].argv()  # AOE runs on the NPU
    ais_infers = [c for c in calls if c.stage == "infer" and c.image == "cann"]
    assert ["--aoe" in c.argv() for c in ais_infers] == [False, True]
    assert all(c.npu_devices == (2,) for c in ais_infers)
    parities = [c.argv()[c.argv().index("--backend") + 1] for c in calls if c.stage == "parity"]
    assert parities == ["Ascend310P3-ais_bench", "Ascend310P3-aoe-ais_bench"]
    perfs = [c for c in calls if c.stage == "perf"]
    assert all(c.npu_devices == (2, 3) for c in perfs)
    argv = perfs[1].argv()
    assert argv[argv.index("--devices") + 1] == "2,3" and "--aoe" in argv
    assert argv[argv.index("--iterations") + 1] == "7" and argv[argv.index("--warmup") + 1] == "1"
    assert stages[-1] == "report"


def test_every_ascend_call_parses_with_the_cli():
    settings = chip_settings(aoe=True, devices="0,1", quiet=True)
    calls = [
        *full_pipeline(settings),
        import_results_call(settings, Path("data/result"), 16, 4),
        stage_call("convert", settings),
        stage_call("parity", settings),
    ]
    for call in calls:
        args = build_parser().parse_args(call.argv())
        assert args.stage == call.stage


def test_dynamic_pipeline_and_auto_chip_must_be_resolved():
    calls = full_pipeline(chip_settings(dynamic=True))
    assert "--dynamic" in convert_call(chip_settings(dynamic=True)).argv()
    assert all("--dynamic" in c.argv() for c in calls if c.image == "cann")
    with pytest.raises(PcbError, match="--chip auto is read from `npu-smi info`"):
        full_pipeline(chip_settings(chip="auto"))


def test_no_chip_keeps_the_cpu_pipeline():
    assert [c.stage for c in full_pipeline(settings_from_config({}))] == [
        "export", "preprocess", "infer", "evaluate", "perf", "report",
    ]  # fmt: skip
    with pytest.raises(PcbError, match="no Ascend chip chosen"):
        parity_call(settings_from_config({}), "x") and stage_call(
            "convert", settings_from_config({})
        )


# ---- container specs of the cann stages --------------------------------------------------------


def test_cann_specs(tmp_path: Path):
    host = fake_ascend_host(tmp_path / "host", ids=(0, 1))
    settings = chip_settings(devices="0,1", results_dir=str(tmp_path / "results"))
    calls = {(c.stage, c.image): c for c in full_pipeline(settings)}
    kwargs = {"data_dir": tmp_path / "data", "results_dir": tmp_path / "results"}
    perf = container_spec(calls[("perf", "cann")], host_root=host, uid=1000, gid=1000, **kwargs)
    assert perf.image == "pcb-cann:latest"
    assert perf.devices == (
        "/dev/davinci0", "/dev/davinci1", "/dev/davinci_manager", "/dev/devmm_svm",
        "/dev/hisi_hdc",
    )  # fmt: skip
    mounts = {(m.source, m.target, m.read_only) for m in perf.mounts}
    assert (NPU_DRIVER, NPU_DRIVER, True) in mounts and (NPU_DCMI, NPU_DCMI, True) in mounts
    assert ("/usr/local/sbin/npu-smi", "/usr/local/bin/npu-smi", True) in mounts
    assert perf.environment["ASCEND_PROCESS_LOG_PATH"] == "/tmp/ascend-log"
    assert perf.environment["PCB_NPU_CONTAINER_DEVICES"] == "0,1"
    assert NPU_INSTALL_INFO not in {m.target for m in perf.mounts}  # absent on this host
    (host / NPU_INSTALL_INFO.lstrip("/")).parent.mkdir(parents=True)
    (host / NPU_INSTALL_INFO.lstrip("/")).touch()
    again = container_spec(calls[("perf", "cann")], host_root=host, uid=1000, gid=1000, **kwargs)
    assert (NPU_INSTALL_INFO, NPU_INSTALL_INFO, True) in {
        (m.source, m.target, m.read_only) for m in again.mounts
    }
    assert perf.network == "none" and perf.user == "1000:1000"
    assert perf.command[:3] == ("perf", "--run", "/results/market")
    infer = container_spec(calls[("infer", "cann")], host_root=host, **kwargs)
    assert infer.devices[0] == "/dev/davinci0" and "/dev/davinci1" not in infer.devices
    convert = container_spec(calls[("convert", "cann")], host_root=host, **kwargs)
    assert convert.devices == () and len(convert.mounts) == 2  # atc needs no NPU
    line = docker_run_command(calls[("perf", "cann")], host_root=tmp_path / "empty", **kwargs)
    assert "--device /dev/davinci1 " in line and "-v /usr/local/Ascend/driver:" in line


# ---- dry run and pre-flight --------------------------------------------------------------------


def test_describe_plan_on_a_host_without_npu(tmp_path: Path):
    settings = chip_settings(devices="0,1", results_dir=str(tmp_path / "results"))
    lines = describe_plan(full_pipeline(settings), settings, host_root=tmp_path)
    text = "\n".join(lines)
    assert lines[0] == "[1/10] export (pcb-export)"
    assert "[3/10] convert (pcb-cann)" in text and "[9/10] perf (pcb-cann, NPU 0,1)" in text
    assert text.count("docker run --rm") == 10
    atc = [line for line in lines if line.startswith("    $ atc ")]
    assert len(atc) == 3 and "--soc_version=Ascend310P3" in atc[0]
    assert (
        f"--model={tmp_path}" not in atc[0] and "--model=/results/market/model/pcb.onnx" in atc[0]
    )
    ais = [line for line in lines if "-m ais_bench" in line]
    assert len(ais) == 2 + 2  # 2 splits; 2 batch sizes, both devices in one multi-device run
    assert "--input /results/market/bins/query" in ais[0] and "--device 0,1 " in ais[-1]
    assert "(ais_bench options of ais_bench 0.0.2 (2023-06 or later" in text
    assert lines[-1].startswith("dry run: nothing ran. This host lacks what the NPU stages need")
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_plan_gives_ais_bench_the_chips_positions_in_the_container(tmp_path: Path):
    """Host devices 2 and 3 are the container's chips 0 and 1; on the host, 2 and 3."""
    settings = chip_settings(devices="2,3", results_dir=str(tmp_path / "results"))
    calls = [c for c in full_pipeline(settings) if c.image == "cann" and c.npu_devices]
    lines = describe_plan(calls, settings, host_root=tmp_path)
    text = "\n".join(lines)
    assert "--device /dev/davinci2 --device /dev/davinci3" in text
    assert "-e PCB_NPU_CONTAINER_DEVICES=2,3" in text
    ais = [line for line in lines if "-m ais_bench" in line]
    assert "--device 0 " in ais[0] and all("--device 0,1 " in line for line in ais[2:])
    local = replace(settings, executor="local")
    lines = describe_plan(calls, local, host_root=tmp_path)
    ais = [line for line in lines if "-m ais_bench" in line]
    assert "--device 2 " in ais[0] and "--device 2,3 " in ais[-1]


def test_local_plan_and_auto_placeholder(tmp_path: Path):
    settings = chip_settings(executor="local")
    lines = describe_plan([convert_call(settings)], settings, host_root=tmp_path)
    assert lines[1].startswith("  python -m pcb convert --run results/market --chip 310P3")
    from pcb.cli.preview import tool_commands

    commands = tool_commands(["convert", "--run", "r", "--chip", "auto", "--batch-sizes", "1"])
    assert commands[0].startswith("(--chip auto:") and "--soc_version=Ascend310P3" in commands[1]
    assert tool_commands(["infer", "--run", "r"]) == []  # onnxruntime runs no vendor tool


def test_preflight_names_the_missing_files_before_anything_runs(tmp_path: Path):
    calls = full_pipeline(chip_settings(devices="0,1"))
    with pytest.raises(PcbError) as error:
        check_npu_hosts(calls, host_root=tmp_path)
    message = str(error.value)
    assert message.startswith("stage infer (pcb-cann) needs an Ascend NPU")
    assert "/dev/davinci0" in message and NPU_DRIVER in message and "--dry-run" in message
    host = fake_ascend_host(tmp_path / "host", ids=(0,))
    with pytest.raises(PcbError, match=r"stage perf .* missing: /dev/davinci1\."):
        check_npu_hosts(calls, host_root=host)
    check_npu_hosts(calls, host_root=fake_ascend_host(tmp_path / "full", ids=(0, 1)))


def test_resolve_auto_chip_on_the_host(tmp_path: Path, monkeypatch):
    use_doubles(monkeypatch, "npu_smi_310_atlas300_x5.txt")
    host = fake_ascend_host(tmp_path / "host", smi=DOUBLES / "bin" / "npu-smi")
    settings = resolve_auto_chip(chip_settings(chip="auto", devices="4,5"), host_root=host)
    assert settings.chip == "310"
    assert resolve_auto_chip(chip_settings(), host_root=host).chip == "310P3"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PcbError, match=r"this host has no npu-smi .* --chip 310P3"):
        resolve_auto_chip(chip_settings(chip="auto"), host_root=tmp_path / "none")


def test_invoke_dry_run_exits_0_without_an_npu(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "full", "--chip", "310P3", "--devices", "0,1", "--aoe",
         "--dry-run"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "$ aoe --framework=5" in out and "pcb_bs16_aoe" in out
    assert "perf --run /results/market --backend ais_bench --chip 310P3" in out
    assert "dry run: nothing ran" in out
    from pcb.orchestration.spec import npu_host

    if not npu_host((0,)).missing:
        return  # an Ascend host: without --dry-run it would really run; nothing more to check
    failed = subprocess.run(
        [sys.executable, "-m", "invoke", "full", "--chip", "310P3"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "needs an Ascend NPU" in failed.stderr and "/dev/davinci0" in failed.stderr


# ---- the whole --chip path on this host, tools doubled -----------------------------------------


def test_chip_pipeline_end_to_end_on_this_host(tmp_path: Path, monkeypatch):
    """Every stage of `invoke full --chip 310P3 --devices 0,1 --local` but export (the tiny
    model stands in for it): the dumps are found, evaluated, compared and reported with no
    manual step."""
    from tiny_model import make_tiny_model

    from pcb.demo import write_dataset

    use_doubles(monkeypatch)
    data, results = tmp_path / "data", tmp_path / "results"
    write_dataset(data / "demo", identities=4)
    settings = settings_from_config(
        {
            "chip": "310P3",
            "devices": "0,1",
            "dataset": str(data / "demo" / "Market-1501-v15.09.15"),
            "results_dir": str(results),
            "run": "npu",
            "batch_sizes": [1, 2],
            "infer_batch_size": 4,
            "npu_loop": 3,
            "npu_warmup": 0,
            "executor": "local",
            "quiet": True,
        }
    )
    layout_root = settings.run_dir
    make_tiny_model(layout_root / "model" / "pcb.onnx")
    calls = [c for c in full_pipeline(settings) if c.stage != "export"]
    for call in calls:
        LocalExecutor().run(
            replace(call, args=(*call.args, "--no-plots")) if call.stage == "report" else call
        )

    report = json.loads((layout_root / "report.json").read_text())
    npu = report["accuracy"]["Ascend310P3-ais_bench"]
    cpu = report["accuracy"]["onnxruntime"]
    assert npu["num_query"] == cpu["num_query"] > 0
    assert abs(npu["top1"] - cpu["top1"]) <= 0.01
    assert npu["parity"]["cos_min"] > 0.999 and npu["parity"]["top1_verdict"] == "PASS"
    assert npu["reference"]["key"] == "onnxruntime"
    throughput = report["throughput"]
    assert throughput["Ascend310P3"]["class"] == "NPU"
    assert throughput["Ascend310P3"]["scope"] == "card"  # devices 0 and 1: the Duo's two chips
    assert set(throughput) >= {"Ascend310P3-dev0", "Ascend310P3-dev1", "Ascend310P3"}
    assert REAL.is_dir()


# ---- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["convert", "parity", "import-results"])
def test_new_stages_have_help(stage):
    result = subprocess.run(
        [sys.executable, "-m", "pcb", stage, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"usage: pcb {stage}" in result.stdout


def test_cli_errors_for_the_npu_backend(tmp_path: Path, capsys):
    from pcb.cli.main import main

    assert main(["infer", "--run", str(tmp_path), "--backend", "ais_bench"]) == 1
    assert "error: --backend ais_bench needs the chip: add --chip 310P3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--dataset", "d", "--run", "r", "--backend", "a/b"])
    assert "backend name 'a/b'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["perf", "--run", "r", "--devices", "0,0"])
    assert "given more than once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["parity", "--run", "r", "--backend", "x", "--threshold", "0"])
    assert "expected a number in (0, 1]" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["evaluate", "--dataset", "d", "--run", "r", "--backend", "Ascend310P3-aoe-ais_bench"]
    )
    assert args.backend == "Ascend310P3-aoe-ais_bench"
