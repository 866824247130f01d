"""The order of the stages: `invoke full` (CPU, with --chip the Ascend stages, with --int8 the
CPU INT8 platform, with --trt the TensorRT stages), `invoke trt`, `invoke import-results`.
Every call comes from argv.py; this module only decides which, and in what order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..constants import REFERENCE_BACKEND
from .argv import (
    INT8_BACKEND,
    NPU_BACKEND,
    convert_call,
    demo_data_call,
    evaluate_call,
    export_call,
    import_chip,
    import_results_call,
    infer_call,
    npu_backend,
    parity_call,
    perf_call,
    preprocess_call,
    quantize_call,
    report_call,
    require_chip,
    trt_backend,
    trt_calibrate_call,
    trt_infer_call,
    trt_perf_call,
)
from .settings import Settings
from .stage import StageCall

STAGES = ("demo-data", "export", "preprocess", "infer", "evaluate", "perf", "report")


def _head(settings: Settings) -> list[StageCall]:
    """[demo-data,] export, preprocess."""
    demo = [demo_data_call(settings)] if settings.demo else []
    return [*demo, export_call(settings), preprocess_call(settings)]


def cpu_pipeline(settings: Settings) -> list[StageCall]:
    """[demo-data,] export, preprocess, infer, evaluate, perf, report."""
    return [
        *_head(settings),
        infer_call(settings),
        evaluate_call(settings),
        perf_call(settings),
        report_call(settings),
    ]


def ascend_pipeline(settings: Settings) -> list[StageCall]:
    """`invoke full --chip ...`: [demo-data,] export, preprocess, convert; per model variant
    (plain, then AOE-tuned) ais_bench inference and its evaluation; the onnxruntime reference
    inference and evaluation; parity of each variant against it; ais_bench throughput per
    variant; the report. The NPU inference comes before the CPU one so that a problem with the
    NPU shows in minutes, not after a CPU pass over the whole dataset."""
    require_chip(settings)
    variants = [False, True] if settings.aoe else [False]
    calls = [*_head(settings), convert_call(settings)]
    for aoe in variants:
        calls += [
            infer_call(settings, NPU_BACKEND, aoe),
            evaluate_call(settings, npu_backend(settings, aoe)),
        ]
    calls += [
        infer_call(settings, REFERENCE_BACKEND),
        evaluate_call(settings, REFERENCE_BACKEND),
    ]
    calls += [parity_call(settings, npu_backend(settings, aoe)) for aoe in variants]
    calls += [perf_call(settings, NPU_BACKEND, aoe) for aoe in variants]
    calls.append(report_call(settings))
    return calls


def int8_calls(settings: Settings) -> list[StageCall]:
    """The CPU INT8 platform beside fp32: quantize, then infer, evaluate, parity against the
    fp32 features, and perf at int8."""
    return [
        quantize_call(settings),
        infer_call(settings, int8=True),
        evaluate_call(settings, INT8_BACKEND),
        parity_call(settings, INT8_BACKEND),
        perf_call(settings, int8=True),
    ]


def torch_calls(settings: Settings) -> list[StageCall]:
    """The PyTorch platform (settings.torch names its backend) beside onnxruntime: infer,
    evaluate, parity against onnxruntime's features, perf."""
    backend = settings.torch
    return [
        infer_call(settings, backend),
        evaluate_call(settings, backend),
        parity_call(settings, backend),
        perf_call(settings, backend),
    ]


def trt_calls(settings: Settings, accuracy: bool = True, parity: bool = True) -> list[StageCall]:
    """The TensorRT stages (docs/tensorrt.md): [trt-calibrate (int8),] trt-perf; with
    `accuracy` trt-infer and its evaluation, and with `parity` the comparison of its features
    with onnxruntime's (whose evaluation must exist by then)."""
    calls = [trt_calibrate_call(settings)] if settings.trt_precision == "int8" else []
    calls.append(trt_perf_call(settings))
    if accuracy:
        calls += [trt_infer_call(settings), evaluate_call(settings, trt_backend(settings))]
        if parity:
            calls.append(parity_call(settings, trt_backend(settings)))
    return calls


def insert_trt(calls: Sequence[StageCall], trt: Sequence[StageCall]) -> list[StageCall]:
    """A pipeline with the TensorRT calls in it: the GPU stages and their evaluation right after
    preprocess (a GPU problem shows before hours of CPU work), parity just before the report
    (after onnxruntime's reference evaluation), the report last."""
    calls, head, tail = list(calls), [], []
    for call in trt:
        (tail if call.stage == "parity" else head).append(call)
    stages = [call.stage for call in calls]
    after = stages.index("preprocess") + 1 if "preprocess" in stages else 0
    merged = [*calls[:after], *head, *calls[after:]]
    stages = [call.stage for call in merged]
    at = len(merged) - stages[::-1].index("report") - 1 if "report" in stages else len(merged)
    return [*merged[:at], *tail, *merged[at:]]


def full_pipeline(settings: Settings) -> list[StageCall]:
    """Every stage `invoke full` runs; demo-data only for a demo run; with a chip, the Ascend
    stages too (ascend_pipeline); with int8 and torch, the CPU INT8 and PyTorch platforms before
    the report; with trt,
    the TensorRT stages too (the GPU stages right after preprocess, parity against
    onnxruntime before the report)."""
    calls = ascend_pipeline(settings) if settings.chip else cpu_pipeline(settings)
    if settings.int8:
        # Before the report, which then shows the int8 column beside fp32.
        calls = [*calls[:-1], *int8_calls(settings), calls[-1]]
    if settings.torch:
        calls = [*calls[:-1], *torch_calls(settings), calls[-1]]
    if settings.trt:
        calls = insert_trt(calls, trt_calls(settings))
    return calls


def reference_ready(run: Path) -> bool:
    """onnxruntime's evaluation of this run exists, so parity has something to compare with."""
    return (Path(run) / "eval" / f"{REFERENCE_BACKEND}.json").is_file()


def trt_pipeline(settings: Settings, accuracy: bool = True) -> list[StageCall]:
    """`invoke trt`: the TensorRT stages of an exported, preprocessed run, parity when the run
    has onnxruntime's evaluation, then the report."""
    parity = reference_ready(settings.run_dir)
    return [*trt_calls(settings, accuracy, parity), report_call(settings)]


def import_pipeline(
    settings: Settings,
    source: Path,
    batch_size: int | None = None,
    chips_per_card: int | None = None,
    evaluate: bool = True,
) -> list[StageCall]:
    """`invoke import-results`: the import; then, with `evaluate`, the evaluation of the
    imported dumps (when the source has dump folders), their parity with onnxruntime (when the
    run has its evaluation) and the report."""
    from ..ascend.chips import backend_key
    from ..ascend.import_results import has_dump_folders

    calls = [import_results_call(settings, source, batch_size, chips_per_card)]
    if not evaluate:
        return calls
    key = backend_key(import_chip(settings), "benchmark")
    if has_dump_folders(Path(source)):
        calls.append(evaluate_call(settings, key))
        if reference_ready(settings.run_dir):
            calls.append(parity_call(settings, key))
    calls.append(report_call(settings))
    return calls


# ---- platforms in parallel -------------------------------------------------------------------

HEAD_STAGES = ("demo-data", "export", "preprocess")
TAIL_STAGES = ("parity", "report")
ASCEND, TENSORRT, CPU = "ascend", "tensorrt", "cpu"


@dataclass(frozen=True)
class Chain:
    """One platform's stages after the shared head, in their order: they depend on each other
    and on the head only, never on another chain."""

    name: str  # ascend, tensorrt, cpu (the onnxruntime reference, int8, torch)
    calls: tuple[StageCall, ...]


@dataclass(frozen=True)
class Plan:
    """A pipeline split where it may fork: the shared head (demo-data, export, preprocess),
    the platforms' independent chains, and the tail that needs them all (parity compares with
    the reference evaluation; the report reads every record)."""

    head: tuple[StageCall, ...]
    chains: tuple[Chain, ...]
    tail: tuple[StageCall, ...]

    def calls(self) -> list[StageCall]:
        return [*self.head, *(c for chain in self.chains for c in chain.calls), *self.tail]


def _backend(call: StageCall) -> str:
    for flag, value in zip(call.args, call.args[1:]):
        if flag == "--backend":
            return str(value)
    return ""


def platform_of(call: StageCall) -> str:
    """The chain a call belongs to: the Ascend tools' image or an NPU backend's evaluation;
    the TensorRT image or its evaluation; else the CPU platforms."""
    backend = _backend(call)
    if call.image == "cann" or backend.endswith(f"-{NPU_BACKEND}"):
        return ASCEND
    if call.image == "tensorrt" or backend.startswith("tensorrt-"):
        return TENSORRT
    return CPU


def split_plan(calls: Sequence[StageCall]) -> Plan:
    """The calls of a pipeline as head, chains and tail. The head is the run of head stages
    at the start; parity and report go to the tail (after every chain); every other call
    joins its platform's chain in its order. Chains are listed Ascend, TensorRT, CPU."""
    calls = list(calls)
    at = 0
    while at < len(calls) and calls[at].stage in HEAD_STAGES:
        at += 1
    head, rest = calls[:at], calls[at:]
    tail = [c for c in rest if c.stage in TAIL_STAGES]
    by_platform: dict[str, list[StageCall]] = {}
    for call in rest:
        if call.stage not in TAIL_STAGES:
            by_platform.setdefault(platform_of(call), []).append(call)
    chains = tuple(
        Chain(name, tuple(by_platform[name]))
        for name in (ASCEND, TENSORRT, CPU)
        if by_platform.get(name)
    )
    return Plan(tuple(head), chains, tuple(tail))
