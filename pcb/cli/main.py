"""`python -m pcb <stage>`: the command line every image runs; thin over the library.

`main` parses, then `dispatch` runs the stage under its run folder's lock and records it in the
run's manifest (pcb/record/manifest.py): the one place every stage passes through, so that none
of them needs to know about skipping, locking, recording or syncing to the disk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from ..constants import REFERENCE_BACKEND
from ..errors import PcbError
from ..layout import RunLayout
from .options import FORCEABLE
from .parser import build_parser

# verify reads the manifest; recording it there would change what it checks.
UNRECORDED = frozenset({"verify"})


def cpu_precision_backend(args: argparse.Namespace) -> None:
    """--precision int8 selects the int8 onnxruntime backend: its own dumps, records, column."""
    if getattr(args, "precision", "fp32") != "int8" or args.stage not in ("infer", "perf"):
        return
    if args.backend != REFERENCE_BACKEND:
        raise PcbError(
            f"--precision int8 is for the onnxruntime CPU backend, not {args.backend}: "
            "drop --precision or use --backend onnxruntime"
        )
    args.backend = f"{REFERENCE_BACKEND}-int8"


def wants_force(args: argparse.Namespace) -> bool:
    """--force before the stage name, or the stage's own --force where it means "run again"
    (the report's means "compare anyway")."""
    own = bool(getattr(args, "force", False)) and args.stage in FORCEABLE
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
    """Run a parsed stage: under its run folder's lock and recorded in its manifest."""
    from ..record.manifest import run_recorded
    from ..record.stage_plans import report_folder, stage_plan

    func: Callable[[argparse.Namespace], None] = args.func
    plan = None if args.stage in UNRECORDED else stage_plan(args)
    if plan is None:
        if args.stage == "report":
            _report_locked(func, args)
        else:
            func(args)
        return
    force = wants_force(args)
    if args.stage in FORCEABLE:
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
    """Every stage's entry point: 0, or 1 with one line naming the problem (130 when
    interrupted); a full disk is named with the folder that filled."""
    from ..fileio import disk_full_message, is_disk_full

    args = build_parser().parse_args(argv)
    try:
        cpu_precision_backend(args)
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
