"""`python -m pcb <stage>`: the command line every image runs; thin over the library."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from ..constants import DEFAULT_BATCH_SIZES
from ..errors import PcbError
from ..layout import RunLayout


def parse_batch_sizes(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]; each a positive integer."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"batch size {part!r} is not an integer: give positive integers such as 1,4,8"
            ) from None
        if size <= 0:
            raise argparse.ArgumentTypeError(
                f"batch size {size} is not positive: give positive integers such as 1,4,8"
            )
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given: use for example 1,4,8")
    return sizes


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", type=Path, required=True, help="run folder, e.g. results/demo (created)"
    )


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="Market-1501 root: the Market-1501-v15.09.15 folder or a folder holding it",
    )


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="onnxruntime",
        choices=["onnxruntime", "ais_bench"],
        help="inference backend (ais_bench: an Ascend NPU, needs --chip)",
    )


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="onnxruntime on the CPU: fp32 (pcb.onnx) or int8 (model/pcb_int8.onnx, static QDQ "
        "quantisation calibrated on the run's bins; made by `quantize` or on first use)",
    )


def _cpu_precision_backend(args: argparse.Namespace) -> None:
    """--precision int8 selects the int8 onnxruntime backend: its own dumps, records, column."""
    if getattr(args, "precision", "fp32") != "int8" or args.stage not in ("infer", "perf"):
        return
    if args.backend != "onnxruntime":
        raise PcbError(
            f"--precision int8 is for the onnxruntime CPU backend, not {args.backend}: "
            "drop --precision or use --backend onnxruntime"
        )
    args.backend = "onnxruntime-int8"


def cmd_quantize(args: argparse.Namespace) -> None:
    from ..quantize import ensure_quantized

    ensure_quantized(
        RunLayout(args.run),
        calibration_images=args.calibration_images,
        force=args.force,
        quiet=args.quiet,
    )


def backend_name(text: str) -> str:
    """A backend's dump / record name: onnxruntime, Ascend310P3-ais_bench, ..."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(
            f"backend name {text!r}: letters, digits, '_', '.' and '-' only, e.g. "
            "onnxruntime or Ascend310P3-ais_bench"
        )
    return text


def chip_arg(text: str) -> str:
    from ..ascend.chips import normalize_chip

    try:
        return normalize_chip(text)
    except PcbError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def devices_arg(text: str) -> tuple[int, ...]:
    from ..ascend.chips import parse_devices

    try:
        return parse_devices(text)
    except PcbError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_chip(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--chip",
        type=chip_arg,
        required=required,
        default=None,
        help="Ascend chip, the Name column of `npu-smi info` (310, 310P3, 310B1, ...) or auto",
    )


def _add_model_variant(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aoe", action="store_true", help="ais_bench: the AOE-tuned model pcb_bs<N>_aoe.om"
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="ais_bench: the dynamic-batch model pcb_dynamic.om"
    )


def _require_chip(args: argparse.Namespace) -> str:
    if not args.chip:
        raise PcbError(f"--backend {args.backend} needs the chip: add --chip 310P3 (or auto)")
    return args.chip


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


FORCE_HELP = (
    "run it again even when <run>/manifest.json shows it complete with the same inputs and "
    "options and its outputs unchanged"
)


def _add_force(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--force", action="store_true", help=FORCE_HELP + extra)


def cmd_demo_data(args: argparse.Namespace) -> None:
    from ..demo import write_demo

    paths = write_demo(args.out, seed=args.seed, identities=args.identities)
    print(f"demo dataset:    {paths.dataset_root}")
    print(f"demo checkpoint: {paths.checkpoint}")
    print("(synthetic images and untrained weights: numbers from them are not comparable)")


def cmd_export(args: argparse.Namespace) -> None:
    from ..export import export_onnx

    layout = RunLayout(args.run)
    export_onnx(
        args.checkpoint,
        layout,
        static_batch_sizes=args.static_batch_sizes or [],
        opset=args.opset,
        force=args.force,
    )


def cmd_preprocess(args: argparse.Namespace) -> None:
    from ..preprocess import preprocess_dataset

    # It prints what it found and used per split.
    preprocess_dataset(
        args.dataset,
        RunLayout(args.run),
        workers=args.workers,
        quiet=args.quiet,
        skip_bad_images=args.skip_bad_images,
    )


def cmd_infer(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_infer import ais_infer

        ais_infer(
            RunLayout(args.run),
            _require_chip(args),
            batch_size=args.batch_size,
            device=args.device,
            aoe=args.aoe,
            dynamic=args.dynamic,
            quiet=args.quiet,
        )
        return
    from ..infer import run_inference

    run_inference(
        RunLayout(args.run),
        backend=args.backend,
        batch_size=args.batch_size,
        threads=args.threads,
        quiet=args.quiet,
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate_run

    evaluate_run(args.dataset, RunLayout(args.run), backend=args.backend, dumps=args.dumps)


def cmd_perf(args: argparse.Namespace) -> None:
    if args.backend == "ais_bench":
        from ..ascend.npu_perf import ais_perf

        ais_perf(
            RunLayout(args.run),
            _require_chip(args),
            args.batch_sizes,
            devices=args.devices,
            loop=args.iterations,
            warmup=args.warmup,
            aoe=args.aoe,
            dynamic=args.dynamic,
            quiet=args.quiet,
        )
        return
    from ..infer import run_perf

    run_perf(
        RunLayout(args.run),
        backend=args.backend,
        batch_sizes=args.batch_sizes,
        warmup=args.warmup,
        iterations=args.iterations,
        threads=args.threads,
        quiet=args.quiet,
        force=args.force,
    )


def cmd_convert(args: argparse.Namespace) -> None:
    from ..ascend.convert import convert_models
    from ..ascend.npu_smi import resolve_chip

    convert_models(
        RunLayout(args.run),
        resolve_chip(args.chip, [args.device]),
        args.batch_sizes,
        dynamic=args.dynamic,
        aoe=args.aoe,
        device=args.device,
        force=args.force,
        quiet=args.quiet,
    )


def cmd_parity(args: argparse.Namespace) -> None:
    from ..parity import run_parity

    run_parity(
        RunLayout(args.run),
        args.backend,
        reference=args.reference,
        threshold=args.threshold,
        dumps=args.dumps,
    )


def cmd_import_results(args: argparse.Namespace) -> None:
    from ..ascend.import_results import import_results

    import_results(
        args.source,
        RunLayout(args.run),
        chip=args.chip,
        batch_size=args.batch_size,
        chips_per_card=args.chips_per_card,
    )


def cmd_verify(args: argparse.Namespace) -> None:
    from ..record.verify import run_verify

    run_verify(args.run, quiet=args.quiet)


def threshold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def cmd_report(args: argparse.Namespace) -> None:
    from ..report.comparison import write_comparison

    write_comparison(
        args.run,
        out=args.out,
        show=args.show,
        ratios=args.ratios,
        force=args.force,
        plots=not args.no_plots,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcb", description="PCB re-ID: export, preprocess, infer, evaluate, perf, report."
    )
    # Its own dest: a sub-parser's default would overwrite a shared one (argparse).
    parser.add_argument(
        "--force",
        dest="force_all",
        action="store_true",
        help="before the stage name: run the stage even when manifest.json shows it current",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    demo = stages.add_parser(
        "demo-data", help="write a synthetic Market-1501-style dataset and an untrained checkpoint"
    )
    demo.add_argument("--out", type=Path, required=True, help="folder to write, e.g. data/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--identities", type=positive_int, default=24, help="identities to draw")
    demo.set_defaults(func=cmd_demo_data)

    export = stages.add_parser("export", help="checkpoint -> <run>/model/pcb.onnx (opset 11)")
    export.add_argument("--checkpoint", type=Path, required=True, help="PCB_3_7.pt or similar")
    _add_run(export)
    export.add_argument(
        "--static-batch-sizes",
        type=parse_batch_sizes,
        default=None,
        help="also write one static model per batch size, e.g. 1,16",
    )
    export.add_argument("--opset", type=positive_int, default=11)
    _add_force(export)
    export.set_defaults(func=cmd_export)

    preprocess = stages.add_parser("preprocess", help="query + gallery JPEGs -> <stem>.bin")
    _add_dataset(preprocess)
    _add_run(preprocess)
    preprocess.add_argument(
        "--workers", type=non_negative_int, default=0, help="processes (0 = all cores)"
    )
    preprocess.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out images that cannot be used (corrupt, empty, not 8-bit, over 4096 x "
        "4096 pixels, not JPEG, dangling links, names with control characters or spaces) "
        "instead of stopping; they are listed in bins/<split>.skipped.json, left out of the "
        "evaluation and counted in the report",
    )
    _add_quiet(preprocess)
    _add_force(preprocess, " (every bin is recomputed)")
    preprocess.set_defaults(func=cmd_preprocess)

    infer = stages.add_parser("infer", help="bins -> per-image feature dumps <stem>_0.bin")
    _add_run(infer)
    _add_backend(infer)
    infer.add_argument("--batch-size", type=positive_int, default=16)
    infer.add_argument(
        "--threads", type=non_negative_int, default=0, help="intra-op threads (0 = all cores)"
    )
    _add_chip(infer)
    infer.add_argument(
        "--device", type=non_negative_int, default=0, help="ais_bench: the NPU device id"
    )
    _add_model_variant(infer)
    _add_quiet(infer)
    _add_precision(infer)
    _add_force(infer, " (every dump is recomputed)")
    infer.set_defaults(func=cmd_infer)

    evaluate = stages.add_parser("evaluate", help="dumps -> CMC top-1/5/10 and mAP")
    _add_dataset(evaluate)
    _add_run(evaluate)
    evaluate.add_argument(
        "--backend",
        type=backend_name,
        default="onnxruntime",
        help="whose dumps: onnxruntime, or a name the infer stage printed, e.g. "
        "Ascend310P3-ais_bench",
    )
    evaluate.add_argument(
        "--dumps",
        type=Path,
        default=None,
        help="folder holding query/ and gallery/ dumps (default: <run>/dumps/<backend>)",
    )
    _add_force(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    perf = stages.add_parser("perf", help="throughput per batch size")
    _add_run(perf)
    _add_backend(perf)
    perf.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        help="comma-separated, default 1,4,8,16,32,64",
    )
    perf.add_argument("--warmup", type=non_negative_int, default=1, help="untimed batches")
    perf.add_argument("--iterations", type=positive_int, default=5, help="timed batches")
    perf.add_argument("--threads", type=non_negative_int, default=0)
    _add_chip(perf)
    perf.add_argument(
        "--devices",
        type=devices_arg,
        default=(0,),
        help="ais_bench: NPU device ids timed at the same time, e.g. 0 or 0,1,2,3",
    )
    _add_model_variant(perf)
    _add_quiet(perf)
    _add_precision(perf)
    _add_force(perf, " (measures again)")
    perf.set_defaults(func=cmd_perf)

    quantize = stages.add_parser(
        "quantize",
        help="pcb.onnx -> model/pcb_int8.onnx: static INT8 (QDQ, per-channel) on the run's bins",
    )
    _add_run(quantize)
    quantize.add_argument(
        "--calibration-images",
        type=positive_int,
        default=None,
        help="bins to calibrate on (default: as recorded, else 64)",
    )
    _add_quiet(quantize)
    _add_force(quantize)
    quantize.set_defaults(func=cmd_quantize)

    convert = stages.add_parser(
        "convert", help="pcb.onnx -> model/om/pcb_bs<N>.om per batch size (atc; Ascend)"
    )
    _add_run(convert)
    _add_chip(convert, required=True)
    convert.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        help="one model per batch size (the gears of --dynamic), default 1,4,8,16,32,64",
    )
    convert.add_argument(
        "--dynamic", action="store_true", help="one dynamic-batch model pcb_dynamic.om instead"
    )
    convert.add_argument(
        "--aoe", action="store_true", help="also AOE-tune each one: pcb_bs<N>_aoe.om (needs an NPU)"
    )
    convert.add_argument("--device", type=non_negative_int, default=0, help="the NPU AOE tunes on")
    convert.add_argument("--force", action="store_true", help="convert even when up to date")
    _add_quiet(convert)
    convert.set_defaults(func=cmd_convert)

    parity = stages.add_parser(
        "parity", help="a backend's features vs onnxruntime's: cosine and top-1 difference"
    )
    _add_run(parity)
    parity.add_argument(
        "--backend", type=backend_name, required=True, help="e.g. Ascend310P3-ais_bench"
    )
    parity.add_argument("--reference", type=backend_name, default="onnxruntime")
    parity.add_argument(
        "--threshold",
        type=threshold_arg,
        default=0.99,
        help="count the images whose cosine similarity is below this (default 0.99)",
    )
    parity.add_argument(
        "--dumps", type=Path, default=None, help="the backend's dump folder, if not the run's"
    )
    _add_force(parity)
    parity.set_defaults(func=cmd_parity)

    imported = stages.add_parser(
        "import-results",
        help="the old benchmark tool's perf files and dumps (the guide's commands) -> a run",
    )
    imported.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="the tool's result/ folder (or the folder holding it)",
    )
    _add_run(imported)
    imported.add_argument(
        "--chip", type=chip_arg, default="310", help="the chip it ran on (default 310)"
    )
    imported.add_argument(
        "--batch-size", type=positive_int, default=None, help="import this batch size's files only"
    )
    imported.add_argument(
        "--chips-per-card",
        type=positive_int,
        default=None,
        help="for the per-card figure (default: 4 for a 310, else 1; 2 for an Atlas 300I Duo)",
    )
    imported.set_defaults(func=cmd_import_results)

    report = stages.add_parser(
        "report",
        help="one or more runs -> comparison.{md,csv,json}, throughput.png, cmc.png and tables",
    )
    report.add_argument(
        "--run",
        type=Path,
        action="append",
        required=True,
        help="run folder, from this host or copied from another; repeat to compare several",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: the run folder for one run, results/comparison for several)",
    )
    report.add_argument(
        "--show",
        choices=["latest", "all"],
        default="latest",
        help="a platform and batch measured by several runs: show the latest, or each in its "
        "own column (both are kept in comparison.json either way)",
    )
    report.add_argument(
        "--ratios",
        default=None,
        help="ratio columns A/B,C/D over platform names or published columns, e.g. "
        "Ascend310P3-aoe/T4-trt-fp16,310P_aoe/T4 (default: every NPU over every GPU measured)",
    )
    report.add_argument(
        "--force",
        action="store_true",
        help="compare runs of different checkpoints or datasets anyway (the report says so)",
    )
    report.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    report.set_defaults(func=cmd_report)

    verify = stages.add_parser(
        "verify",
        help="read every file of a run again and check it against manifest.json; exit 1 "
        "naming each mismatch",
    )
    _add_run(verify)
    verify.add_argument("--quiet", action="store_true", help="no notes on a clean run")
    verify.set_defaults(func=cmd_verify)
    # TensorRT stages (trt-calibrate, trt-perf, trt-infer): parsers and cmd_ functions live in
    # pcb/tensorrt/cli.py, so `python -m pcb.tensorrt` and the tests use the very same ones.
    from .tensorrt import register as register_tensorrt

    register_tensorrt(stages)
    return parser


UNRECORDED = frozenset({"verify"})


def _wants_force(args: argparse.Namespace) -> bool:
    # The report's own --force means "compare anyway", not "run again".
    own = bool(getattr(args, "force", False)) and args.stage != "report"
    return bool(getattr(args, "force_all", False)) or own


def _run_and_sync(
    func: Callable[[argparse.Namespace], None], args: argparse.Namespace, root: Path
) -> None:
    func(args)
    # Before the manifest records the stage complete: what it wrote is on the disk, the
    # per-image bins and dumps (written without an fsync each) and the files tools wrote.
    from ..fileio import sync_folder

    if root.is_dir():
        sync_folder(root)


def _report_locked(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """A comparison of several runs: not any one run's stage, but it writes into its --out
    folder, which may be one of those runs (or another run folder), so it holds that
    folder's lock like any stage; a folder it created for nothing is removed again."""
    from ..record.runlock import LOCK_NAME, RunLock
    from ..record.stage_plans import report_output

    out = report_output(args)
    created = not out.exists()
    lock = RunLock(out, "report")
    lock.acquire()
    try:
        func(args)
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            (out / LOCK_NAME).unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


def dispatch(args: argparse.Namespace, argv: Sequence[str] | None = None) -> None:
    """Run a parsed stage: under its run folder's lock and recorded in its manifest.

    The one place every stage passes through (pcb/record/manifest.py), so that none of them
    needs to know about skipping, locking, recording or syncing to the disk.
    """
    from ..record.manifest import run_recorded
    from ..record.stage_plans import report_folder, stage_plan

    func: Callable[[argparse.Namespace], None] = args.func
    # verify reads the manifest; recording it there would change what it checks.
    plan = None if args.stage in UNRECORDED else stage_plan(args)
    if plan is None:
        if args.stage == "report":
            _report_locked(func, args)
        else:
            func(args)
        return
    force = _wants_force(args)
    if args.stage != "report" and hasattr(args, "force"):
        args.force = force
    root = Path(report_folder(args) if args.stage == "report" else args.run)
    command = list(argv) if argv is not None else sys.argv[1:]
    run_recorded(
        plan,
        RunLayout(root),
        lambda: _run_and_sync(func, args, root),
        force=force,
        command=command,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from ..fileio import disk_full_message, is_disk_full

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _cpu_precision_backend(args)
        dispatch(args, argv)
    except PcbError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if not is_disk_full(error):
            raise
        print(f"error: {disk_full_message(Path(error.filename or '.').parent)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
