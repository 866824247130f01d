from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.orchestration.argv import stage_call
from pcb.orchestration.pipeline import STAGES, full_pipeline
from pcb.orchestration.settings import DEMO_CHECKPOINT, DEMO_DATASET, settings_from_config


def test_defaults_and_overrides():
    settings = settings_from_config({"run": "market", "threads": 2}, threads="4", run=None)
    assert settings.threads == 4
    assert settings.run_dir == Path("results/market")
    assert settings.batch_sizes == (1, 4, 8, 16, 32, 64)


def test_batch_sizes_from_option_string():
    assert settings_from_config({}, batch_sizes="1,16").batch_sizes == (1, 16)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_sizes": "0,4"}, r"batch_sizes = 0: expected an integer >= 1"),
        ({"batch_sizes": "a"}, r"batch_sizes = 'a'"),
        ({"infer_batch_size": "-2"}, r"infer_batch_size = -2"),
        ({"perf_iterations": 1.5}, r"perf_iterations = 1.5"),
        ({"executor": "k8s"}, r"executor = 'k8s': expected one of"),
        ({"perf_timer": "stopwatch"}, r"perf_timer = 'stopwatch': expected loadgen or fixed"),
        ({"perf_min_duration": "-1"}, r"perf_min_duration = '-1': expected seconds"),
        ({"perf_min_queries": 0}, r"perf_min_queries = 0: expected an integer >= 1"),
        ({"perf_repeats": "0"}, r"perf_repeats = 0: expected an integer >= 1"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(PcbError, match=message):
        settings_from_config({}, **overrides)


def test_unknown_config_key_is_named():
    with pytest.raises(
        PcbError, match=r"unknown key\(s\) under pcb: batch_size \(did you mean .*; known keys"
    ):
        settings_from_config({"batch_size": 8})


def test_demo_points_at_generated_data():
    settings = settings_from_config({"run": "market"}, demo=True)
    assert settings.dataset == DEMO_DATASET
    assert settings.checkpoint == DEMO_CHECKPOINT
    assert settings.run == "demo"


def test_full_pipeline_order():
    assert [c.stage for c in full_pipeline(settings_from_config({}))] == list(STAGES[1:])
    demo = full_pipeline(settings_from_config({}, demo=True))
    assert [c.stage for c in demo] == list(STAGES)
    assert demo[0].writes_data
    assert not any(call.writes_data for call in demo[1:])


def test_stage_arguments():
    settings = settings_from_config(
        {}, batch_sizes="1,8", perf_iterations=3, static_batch_sizes="1,16", quiet=True
    )
    perf = stage_call("perf", settings)
    assert perf.image == "runtime"
    assert perf.argv() == [
        "perf",
        "--run",
        "results/market",
        "--backend",
        "onnxruntime",
        "--batch-sizes",
        "1,8",
        "--warmup",
        "1",
        "--timer",
        "loadgen",
        "--min-duration",
        "10",
        "--min-queries",
        "100",
        "--repeats",
        "3",
        "--threads",
        "0",
        "--quiet",
    ]
    fixed = stage_call("perf", replace(settings, perf_timer="fixed")).argv()
    assert fixed[fixed.index("--timer") :][:4] == ["--timer", "fixed", "--iterations", "3"]
    assert "--min-duration" not in fixed
    quick = stage_call("perf", replace(settings, perf_min_duration=0.5)).argv()
    assert quick[quick.index("--min-duration") + 1] == "0.5"
    export = stage_call("export", settings)
    assert export.image == "export"
    assert export.args[:2] == ("--checkpoint", Path("data/PCB_3_7.pt"))
    assert export.argv()[-2:] == ["--static-batch-sizes", "1,16"]


def test_every_stage_call_parses_with_the_cli():
    from pcb.cli.parser import build_parser

    settings = settings_from_config({}, demo=True, static_batch_sizes="4", int8=True, torch=True)
    for call in full_pipeline(settings):
        args = build_parser().parse_args(call.argv())
        assert args.stage == call.stage


def test_torch_platform_joins_before_the_report():
    calls = full_pipeline(settings_from_config({}, demo=True, torch="torch-bf16"))
    assert [call.stage for call in calls[-5:]] == ["infer", "evaluate", "parity", "perf", "report"]
    infer, evaluate, parity, perf = calls[-5:-1]
    # PyTorch is in the export image only; evaluation and parity read dumps (runtime image).
    assert [c.image for c in (infer, evaluate, parity, perf)] == [
        "export",
        "runtime",
        "runtime",
        "export",
    ]
    assert all(c.argv()[c.argv().index("--backend") + 1] == "torch-bf16" for c in calls[-5:-1])
    assert settings_from_config({}, torch=True).torch == "torch"
    assert settings_from_config({}, torch=False).torch == ""
    with pytest.raises(PcbError, match=r"pcb.torch = 'torch-int8': expected false, true or one"):
        settings_from_config({}, torch="torch-int8")


def test_int8_platform_joins_before_the_report():
    calls = full_pipeline(settings_from_config({}, demo=True, int8=True))
    stages = [call.stage for call in calls]
    assert stages[-6:] == ["quantize", "infer", "evaluate", "parity", "perf", "report"]
    quantize, infer, evaluate = calls[-6], calls[-5], calls[-4]
    assert quantize.image == "export"  # quantising needs onnx, which the runtime image lacks
    assert infer.argv()[-2:] == ["--precision", "int8"]
    assert "onnxruntime-int8" in evaluate.argv()


def test_cli_int8_precision_selects_the_int8_backend():
    from pcb.cli.main import cpu_precision_backend
    from pcb.cli.parser import build_parser

    args = build_parser().parse_args(["perf", "--run", "r", "--precision", "int8"])
    cpu_precision_backend(args)
    assert args.backend == "onnxruntime-int8"
    bad = build_parser().parse_args(
        ["perf", "--run", "r", "--backend", "ais_bench", "--precision", "int8"]
    )
    with pytest.raises(PcbError, match="--precision int8 is for the onnxruntime CPU backend"):
        cpu_precision_backend(bad)
