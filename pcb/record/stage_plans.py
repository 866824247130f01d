"""What each command-line stage reads, how it is asked, and what it writes: its StagePlan.

The manifest wrapper (pcb/record/manifest.py) is generic; this table is the one place that knows
the stages. Outputs are run-relative. CPU stages whose outputs are fully described here are
skipped when current; stages on an NPU or a GPU are recorded but always run, since their
tools keep their own caches (converted .om models, TensorRT engines) and what they write
depends on the chip or GPU found at run time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..constants import SPLITS
from ..layout import DEFAULT_COMPARISON_DIR, RunLayout
from ..provenance import host_name
from .manifest import StagePlan

# Arguments that say where, or how loudly, never what: not options of the stage's result.
NOT_OPTIONS = frozenset(
    {"func", "stage", "run", "quiet", "force", "force_all", "dataset", "checkpoint", "dumps"}
)


def _options(args: argparse.Namespace, *drop: str) -> dict[str, Any]:
    return {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in NOT_OPTIONS and key not in drop and not isinstance(value, Path)
    }


def _relative(layout: RunLayout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def _export(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    static = sorted(set(args.static_batch_sizes or []))
    outputs = [layout.onnx_path, layout.export_record]
    outputs += [layout.static_onnx_path(b) for b in static]
    return StagePlan(
        key="export",
        stage="export",
        inputs={"checkpoint": args.checkpoint},
        options={"opset": args.opset, "static_batch_sizes": static},
        outputs=tuple(_relative(layout, p) for p in outputs),
    )


def _preprocess(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    return StagePlan(
        key="preprocess",
        stage="preprocess",
        inputs={"dataset": args.dataset},
        # Workers change the speed, not one byte of the bins.
        options=_options(args, "workers"),
        outputs=("bins",),
        reset=("bins",),
    )


def _npu_key(stage: str, args: argparse.Namespace) -> str:
    """infer/ais_bench-310P3-aoe: one entry per chip and model variant, as their files are."""
    parts = [f"{stage}/ais_bench"]
    if args.chip:
        parts.append(str(args.chip))
    parts += [name for name in ("aoe", "dynamic") if getattr(args, name, False)]
    return "-".join(parts)


def _infer(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    if args.backend == "ais_bench":
        return StagePlan(
            key=_npu_key("infer", args),
            stage="infer",
            inputs={"bins": layout.root / "bins"},
            options=_options(args),
            skippable=False,
        )
    dumps = layout.dumps_dir(args.backend, "query").parent
    return StagePlan(
        key=f"infer/{args.backend}",
        stage="infer",
        inputs={"model": layout.onnx_path, "bins": layout.root / "bins"},
        # The thread count changes the speed, not the features.
        options=_options(args, "threads", "chip", "device", "aoe", "dynamic"),
        outputs=(_relative(layout, dumps),),
        reset=(_relative(layout, dumps),),
    )


def _evaluate(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    dumps = args.dumps if args.dumps is not None else layout.root / "dumps" / args.backend
    inputs = {"dataset": args.dataset, "dumps": dumps}
    for split in SPLITS:
        # Images preprocessing skipped leave the evaluation: a change there is a new input.
        inputs[f"{split}_skipped"] = layout.skipped_path(split)
    return StagePlan(
        key=f"evaluate/{args.backend}",
        stage="evaluate",
        inputs=inputs,
        options=_options(args),
        outputs=(_relative(layout, layout.eval_path(args.backend)),),
    )


def _perf(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    if args.backend == "ais_bench":
        return StagePlan(
            key=_npu_key("perf", args),
            stage="perf",
            options=_options(args),
            skippable=False,
        )
    return StagePlan(
        key=f"perf/{args.backend}",
        stage="perf",
        inputs={"model": layout.onnx_path},
        # A time measured on one host says nothing of another: a copied run measures anew.
        options={**_options(args, "chip", "devices", "aoe", "dynamic"), "host": host_name()},
        outputs=(_relative(layout, layout.perf_path(args.backend)),),
    )


def _parity(args: argparse.Namespace, layout: RunLayout) -> StagePlan:
    dumps = args.dumps if args.dumps is not None else layout.root / "dumps" / args.backend
    record = _relative(layout, layout.eval_path(args.backend))
    return StagePlan(
        key=f"parity/{args.backend}",
        stage="parity",
        inputs={
            "dumps": dumps,
            "reference_dumps": layout.root / "dumps" / args.reference,
            "reference_eval": layout.eval_path(args.reference),
        },
        options=_options(args),
        outputs=(record,),
        amends=(record,),
    )


def _record_only(key: str, stage: str, args: argparse.Namespace) -> StagePlan:
    return StagePlan(key=key, stage=stage, options=_options(args), skippable=False)


def stage_plan(args: argparse.Namespace) -> StagePlan | None:
    """The plan of a parsed command line; None for commands that write no run folder."""
    stage = args.stage
    if stage == "demo-data":
        return None
    if stage == "report":
        return report_plan(args)
    layout = RunLayout(Path(args.run))
    if stage == "export":
        return _export(args, layout)
    if stage == "preprocess":
        return _preprocess(args, layout)
    if stage == "infer":
        return _infer(args, layout)
    if stage == "evaluate":
        return _evaluate(args, layout)
    if stage == "perf":
        return _perf(args, layout)
    if stage == "parity":
        return _parity(args, layout)
    if stage == "convert":
        return _record_only(f"convert/{args.chip}", stage, args)
    if stage == "import-results":
        return _record_only(f"import-results/{args.chip}", stage, args)
    if stage == "trt-calibrate":
        return _record_only("trt-calibrate", stage, args)
    if stage in ("trt-perf", "trt-infer"):
        return _record_only(f"{stage}/{args.precision}", stage, args)
    # A stage added without a plan is still locked and recorded, just never skipped.
    return _record_only(stage, stage, args)


def report_folder(args: argparse.Namespace) -> Path | None:
    """The run folder a report writes into: its one run when no other --out is given."""
    runs = [Path(r) for r in args.run]
    if len(runs) != 1:
        return None
    if args.out is not None and Path(args.out).resolve() != runs[0].resolve():
        return None
    return runs[0]


def report_output(args: argparse.Namespace) -> Path:
    """Where a report writes: --out, else its one run folder, else results/comparison."""
    if args.out is not None:
        return Path(args.out)
    if len(args.run) == 1:
        return Path(args.run[0])
    return DEFAULT_COMPARISON_DIR


def report_plan(args: argparse.Namespace) -> StagePlan | None:
    folder = report_folder(args)
    if folder is None:
        # A comparison of several runs is not any one run's stage; pcb.cli.main still holds the
        # lock of the folder it writes into.
        return None
    return StagePlan(
        key="report",
        stage="report",
        options=_options(args, "out"),
        skippable=False,
        creates_manifest=False,
    )
