"""atc and aoe: command lines, their output text, and the convert stage around them (run with
the atc / aoe doubles of tests/doubles/ascend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ascend_helpers import DOUBLES, fixture_text, make_run, use_doubles
from tiny_model import make_tiny_model

from pcb.ascend.atc import (
    aoe_command,
    atc_command,
    failure_message,
    input_shape,
    log_location,
    parse_atc_output,
)
from pcb.ascend.convert import (
    convert_jobs,
    convert_models,
    om_path,
    om_record_path,
    require_om,
)
from pcb.cli.main import main
from pcb.errors import PcbError

# ---- command lines -----------------------------------------------------------------------------


def test_atc_static_command():
    assert atc_command("m/pcb.onnx", "om/pcb_bs16", "310P3", batch_size=16) == [
        "atc",
        "--framework=5",
        "--model=m/pcb.onnx",
        "--output=om/pcb_bs16",
        "--input_format=NCHW",
        "--input_shape=input_1:16,3,384,128",
        "--soc_version=Ascend310P3",
        "--log=error",
    ]


def test_atc_dynamic_command_and_log_level():
    command = atc_command(
        "pcb.onnx", "pcb_dynamic", "ascend310", dynamic_batch_sizes=[16, 1, 4, 4], log="debug"
    )
    assert "--input_shape=input_1:-1,3,384,128" in command
    assert "--dynamic_batch_size=1,4,16" in command
    assert command[-2:] == ["--soc_version=Ascend310", "--log=debug"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "dynamic-batch model needs its batch sizes"),
        ({"batch_size": 1, "dynamic_batch_sizes": [1]}, "not both"),
        ({"batch_size": 0}, "must be positive"),
        ({"dynamic_batch_sizes": [0, 4]}, "must be positive"),
    ],
)
def test_atc_bad_commands(kwargs, message):
    with pytest.raises(PcbError, match=message):
        atc_command("pcb.onnx", "out", "310P3", **kwargs)


def test_atc_refuses_unknown_chip():
    with pytest.raises(PcbError, match="unknown Ascend chip '710'"):
        atc_command("pcb.onnx", "out", "710", batch_size=1)


def test_aoe_command():
    assert aoe_command("pcb.onnx", "om/pcb_bs4_aoe", 4, device=2) == [
        "aoe",
        "--framework=5",
        "--model=pcb.onnx",
        "--job_type=2",
        "--output=om/pcb_bs4_aoe",
        "--input_format=NCHW",
        "--input_shape=input_1:4,3,384,128",
        "--device=2",
    ]
    assert "--job_type=1" in aoe_command("pcb.onnx", "o", 1, job_type=1)
    assert not any(a.startswith("--device") for a in aoe_command("pcb.onnx", "o", 1))
    with pytest.raises(PcbError, match="AOE job type 3"):
        aoe_command("pcb.onnx", "o", 1, job_type=3)


def test_input_shape():
    assert input_shape(None) == "input_1:-1,3,384,128"
    assert input_shape(64) == "input_1:64,3,384,128"


# ---- output text -------------------------------------------------------------------------------


def test_success_with_warnings():
    outcome = parse_atc_output(fixture_text("atc_success.txt"))
    assert outcome.success is True and outcome.errors == ()  # W11001 warnings are no errors


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("atc_E10007_pid.txt", "E10007", "[--framework] is required. The value must be"),
        ("atc_E10016_input_name.txt", "E10016", "Opname [input] specified in [--input_shape]"),
        ("atc_E19010_opset.txt", "E19010", "No parser is registered for Op [model1 div node"),
        ("atc_EC0010_pid.txt", "EC0010", "Failed to import Python module [ModuleNotFound"),
        ("atc_EZ3003_310P3.txt", "EZ3003", "No supported Ops kernel and engine are found"),
    ],
)
def test_failures(name, code, message):
    outcome = parse_atc_output(fixture_text(name))
    assert outcome.success is False
    [error] = outcome.errors
    assert error.code == code
    assert error.message.startswith(message)
    assert "PID" not in error.message


def test_failure_cause_and_solution():
    [error] = parse_atc_output(fixture_text("atc_EZ3003_310P3.txt")).errors
    assert error.cause.startswith("The operator is not supported by the system")
    assert error.solution.startswith("1. Check that the OPP component is installed properly")
    assert "TraceBack" not in error.describe() and "build graph failed" not in error.describe()
    [error] = parse_atc_output(fixture_text("atc_EC0010_pid.txt")).errors
    assert error.solution.startswith("Check that all required components")


def test_crash_without_verdict():
    outcome = parse_atc_output("Segmentation fault (core dumped)\n")
    assert outcome.success is None and outcome.errors == ()


def test_failure_message_names_code_output_and_logs():
    message = failure_message(
        "atc", "pcb_bs1.om", 1, fixture_text("atc_E19010_opset.txt"), "/r/atc.out", "/r/logs"
    )
    assert message.startswith("atc failed converting pcb_bs1.om (exit status 1): E19010: No parser")
    assert "export with --opset 11" in message
    assert "Full output: /r/atc.out; atc's detailed logs: /r/logs." in message
    message = failure_message("atc", "x.om", 139, "line 1\nSegmentation fault\n", "o", "l")
    assert "(exit status 139): line 1 / Segmentation fault." in message


def test_log_location():
    assert log_location({"ASCEND_PROCESS_LOG_PATH": "/r/logs"}) == "/r/logs"
    assert log_location({}) == "~/ascend/log"
    assert "own output" in log_location({"ASCEND_SLOG_PRINT_TO_STDOUT": "1"})


# ---- the convert stage -------------------------------------------------------------------------


def test_plan(tmp_path: Path):
    layout = make_run(tmp_path / "run", {"query": 1})
    jobs = convert_jobs(layout, "310P3", [16, 1, 16], aoe=True, device=3)
    assert [(j.stem, j.tool) for j in jobs] == [
        ("pcb_bs1", "atc"),
        ("pcb_bs16", "atc"),
        ("pcb_bs1_aoe", "aoe"),
        ("pcb_bs16_aoe", "aoe"),
    ]
    assert f"--output={layout.model_dir / 'om' / 'pcb_bs16_aoe'}" in jobs[3].command
    assert "--device=3" in jobs[3].command
    [dynamic] = convert_jobs(layout, "310", [1, 8], dynamic=True)
    assert dynamic.stem == "pcb_dynamic" and "--dynamic_batch_size=1,8" in dynamic.command
    with pytest.raises(PcbError, match="AOE tunes static models only"):
        convert_jobs(layout, "310P3", [1], dynamic=True, aoe=True)


def test_convert_writes_models_and_records_then_skips(tmp_path, monkeypatch, capsys):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    monkeypatch.chdir(tmp_path)
    made = convert_models(layout, "310P3", [1, 4], quiet=True)
    assert [p.name for p in made] == ["pcb_bs1.om", "pcb_bs4.om"]
    record = json.loads(om_record_path(made[1]).read_text())
    assert record["options"]["soc_version"] == "Ascend310P3"
    assert "--input_shape=input_1:4,3,384,128" in record["options"]["args"]
    assert record["tool"] == "atc" and len(record["onnx_md5"]) == 32
    assert (layout.root / "logs" / "convert" / "pcb_bs4" / "atc.out").is_file()
    # atc's plog went to the run's log folder, its fusion_result.json to a throwaway folder
    assert list((layout.root / "logs" / "convert" / "pcb_bs4").glob("debug/plog/*.log"))
    assert not (tmp_path / "fusion_result.json").exists()
    assert not list((layout.model_dir / "om").glob(".partial*"))
    capsys.readouterr()
    stamp = made[0].stat().st_mtime_ns
    convert_models(layout, "310P3", [1, 4], quiet=True)
    assert "pcb_bs1.om: up to date" in capsys.readouterr().out
    assert made[0].stat().st_mtime_ns == stamp
    # Another chip or another ONNX: converted again.
    convert_models(layout, "310", [1], quiet=True)
    assert "written by atc" in capsys.readouterr().out
    make_tiny_model(layout.onnx_path, height=384, batch=1)
    convert_models(layout, "310", [1], quiet=True)
    assert "written by atc" in capsys.readouterr().out


def test_require_om_checks_the_chip(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    with pytest.raises(
        PcbError,
        match=r"pcb_bs16.om not found .* `python -m pcb convert --run .* --batch-sizes 16`",
    ):
        require_om(layout, 16, False, "310P3")
    convert_models(layout, "310P3", [16], quiet=True)
    assert require_om(layout, 16, False, "310P3") == om_path(layout, 16)
    with pytest.raises(PcbError, match="converted for Ascend310P3, not Ascend310:"):
        require_om(layout, 16, False, "310")


def test_aoe_models(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    made = convert_models(layout, "310P3", [4], aoe=True, device=1, quiet=True)
    assert [p.name for p in made] == ["pcb_bs4.om", "pcb_bs4_aoe.om"]
    record = json.loads(om_record_path(made[1]).read_text())
    assert record["tool"] == "aoe" and "--job_type=2" in record["options"]["args"]


def test_atc_failure_is_one_message_with_code_and_log(tmp_path, monkeypatch, capsys):
    use_doubles(monkeypatch)
    layout = make_run(tmp_path / "run", {"query": 1})
    make_tiny_model(layout.onnx_path, input_name="images")  # not input_1: atc says E10016
    code = main(["convert", "--run", str(layout.root), "--chip", "310P3", "--batch-sizes", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "error: atc failed converting pcb_bs1.om (exit status 1): E10016:" in err
    assert "Opname [input_1] specified in [--input_shape] is not found in the model" in err
    assert f"{layout.root / 'logs' / 'convert' / 'pcb_bs1' / 'atc.out'}" in err
    assert not om_path(layout, 1).exists() and not om_record_path(om_path(layout, 1)).exists()


def test_forced_opset_failure(tmp_path, monkeypatch):
    use_doubles(monkeypatch)
    monkeypatch.setenv("ATC_DOUBLE_FAIL", "E19010")
    layout = make_run(tmp_path / "run", {"query": 1})
    with pytest.raises(PcbError, match=r"E19010: No parser .* export with --opset 11"):
        convert_models(layout, "310P3", [1], quiet=True)


def test_missing_atc_and_onnx(tmp_path, monkeypatch):
    layout = make_run(tmp_path / "run", {"query": 1})
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    monkeypatch.delenv("ASCEND_HOME_PATH", raising=False)
    # No toolkit at all: named before anything runs.
    with pytest.raises(PcbError, match=r"no CANN toolkit install record .* set_env.sh"):
        convert_models(layout, "310P3", [1], quiet=True)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(DOUBLES))
    with pytest.raises(PcbError, match=r"atc not found on the PATH: .* cann image"):
        convert_models(layout, "310P3", [1], quiet=True)
    layout.onnx_path.unlink()
    with pytest.raises(PcbError, match="run `pcb export` first"):
        convert_models(layout, "310P3", [1], quiet=True)
