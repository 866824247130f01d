"""NPU inference with ais_bench: query and gallery bins -> per-image feature dumps where the
evaluate stage reads them, `<run>/dumps/<platform>-ais_bench/<split>/<stem>_0.bin`.

ais_bench is given a split's bin folder and a scratch output folder. It sorts the files
naturally, feeds `batch` files per inference (the model's input is batch x one file) and pads
the last batch with copies of the first file; it writes into a timestamped folder it creates
under the output folder, plus `<timestamp>_summary.json` beside it. Recent versions write one
output per input file (`<stem>_0.bin`, padding skipped); ais_infer before them wrote one file
per batch, named after the batch's first input. Both are turned into one dump per image here,
the padding dropped, and the count checked against the split's image list.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..constants import FEATURE_BYTES, INPUT_BYTES, SPLITS
from ..errors import PcbError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, file_md5, read_json
from ..infer import bin_digests, infer_record_path, read_stems
from ..layout import RunLayout
from ..provenance import host_name, utc_now
from ..record.digest import digest_store
from ..record.digest_records import SplitDigests, check_files, describe_redo, dumps_record_path
from ..tool import run_tool
from .ais_bench import (
    DEFAULT_PROFILE,
    AisBenchProfile,
    ais_bench_command,
    natural_sort,
    output_name,
    read_profile,
    version_text,
)
from .ais_bench_output import (
    SUMMARY_SUFFIX,
    AisSummary,
    cross_check,
    find_run_files,
    parse_printed_summary,
    parse_summary_json,
)
from .chips import backend_key, platform_name
from .convert import om_record_path, require_om
from .npu_smi import resolve_chip
from .visible import tool_device_ids

LISTED = 10
TENSOR_MISMATCH = "not match"


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return f"{len(items)}: {', '.join(items[:LISTED])}{more}"


def scratch_dir(layout: RunLayout, key: str, split: str) -> Path:
    # Beside the dumps, on the same file system, so that each dump is moved by a rename.
    return layout.root / "dumps" / key / ".ais_bench" / split


def logs_dir(layout: RunLayout, stage: str, key: str) -> Path:
    return layout.root / "logs" / stage / key


def infer_command(
    layout: RunLayout,
    om: Path,
    key: str,
    split: str,
    batch_size: int,
    device: int,
    dynamic: bool,
    python: str = "python3",
    profile: AisBenchProfile = DEFAULT_PROFILE,
) -> list[str]:
    """The ais_bench command of one split (also what a dry run prints); `device` is the id
    the tool knows the chip by (visible.tool_device_ids)."""
    return ais_bench_command(
        str(om),
        input_dir=str(layout.bins_dir(split)),
        output=str(scratch_dir(layout, key, split)),
        batch_size=batch_size,
        devices=[device],
        dym_batch=batch_size if dynamic else None,
        display_all_summary=True,
        python=python,
        profile=profile,
    )


def dump_name(stem: str) -> str:
    return f"{stem}_0.bin"


def check_bins(bins_dir: Path, stems: Sequence[str]) -> list[str]:
    """The split's bin names in ais_bench's order; the folder must hold exactly the listed
    images, since ais_bench infers every .bin it finds there."""
    if not bins_dir.is_dir():
        raise PcbError(f"bin folder {bins_dir} not found: run `python -m pcb preprocess` first")
    present = {e.name for e in os.scandir(bins_dir) if e.is_file() and e.name.endswith(".bin")}
    wanted = {f"{stem}.bin" for stem in stems}
    missing, extra = sorted(wanted - present), sorted(present - wanted)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"listed images without a bin {_listing(missing)}")
        if extra:
            parts.append(f"bins not in the list {_listing(extra)}")
        raise PcbError(
            f"{bins_dir} does not match its image list: {'; '.join(parts)}; re-run "
            "`python -m pcb preprocess` for this run"
        )
    return natural_sort(sorted(present))


def _move(source: Path, target: Path) -> None:
    os.replace(source, target)


def collect_dumps(produced: Path, inputs: Sequence[str], files_per_batch: int, dest: Path) -> int:
    """Move ais_bench's outputs (index 0) from `produced` into `dest` as `<stem>_0.bin`, one
    per input file, splitting per-batch files; returns how many; PcbError when any input has
    no output or an output has an unexpected size."""
    dest.mkdir(parents=True, exist_ok=True)
    sizes = {e.name: e.stat().st_size for e in os.scandir(produced) if e.is_file()}
    done: set[str] = set()
    used: set[str] = set()
    for name in inputs:
        source = output_name(name)
        if sizes.get(source) == FEATURE_BYTES:
            _move(produced / source, dest / dump_name(name[: -len(".bin")]))
            done.add(name)
            used.add(source)
    batch_bytes = files_per_batch * FEATURE_BYTES
    for start in range(0, len(inputs), files_per_batch):
        chunk = inputs[start : start + files_per_batch]
        source = output_name(chunk[0])
        if files_per_batch == 1 or source in used or sizes.get(source) != batch_bytes:
            continue
        data = (produced / source).read_bytes()
        # The tail of the last batch is ais_bench's padding (copies of the first file): dropped.
        for index, name in enumerate(chunk):
            part = data[index * FEATURE_BYTES : (index + 1) * FEATURE_BYTES]
            # Synced together before the stage is recorded complete (pcb.fileio).
            atomic_write_bytes(dest / dump_name(name[: -len(".bin")]), part, durable=False)
            done.add(name)
        (produced / source).unlink()
        used.add(source)
    missing = [name for name in inputs if name not in done]
    if missing:
        wrong = sorted(
            f"{n} ({s} bytes)"
            for n, s in sizes.items()
            if n.endswith("_0.bin") and n not in used and s not in (FEATURE_BYTES, batch_bytes)
        )
        detail = ""
        if wrong:
            detail = (
                f"; outputs of unexpected size {_listing(wrong)} (one image's feature is "
                f"{FEATURE_BYTES} bytes of float32: half of it means float16 outputs, convert "
                "without --output_type)"
            )
        raise PcbError(
            f"ais_bench wrote no output for {_listing(missing)} in {produced}{detail}; see its "
            "output above"
        )
    return len(done)


def read_summaries(output: str, summary_path: Path | None, batch_size: int) -> AisSummary:
    """The JSON summary, once checked against the printed one; the printed one alone (checked
    against ais_bench's formula) when the run wrote no JSON."""
    printed = parse_printed_summary(output)
    if summary_path is None:
        cross_check(printed, printed, batch_size, where="its printed summary")
        return printed
    try:
        payload = read_json(summary_path)
    except (OSError, ValueError) as error:
        raise PcbError(f"cannot read ais_bench's {summary_path} ({error})") from error
    from_json = parse_summary_json(payload, str(summary_path))
    cross_check(printed, from_json, batch_size, where=str(summary_path))
    return from_json


def tool_failure(tool: str, returncode: int, output: str, log_file: Path) -> PcbError:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "[ERROR]" in line or "Error" in line][-3:]
    detail = " / ".join(errors or lines[-5:]) or "no output"
    hint = ""
    if TENSOR_MISMATCH in output and "filesize" in output:
        hint = (
            " Hint: a bin's size does not divide the model's input size: the bins must be "
            f"{INPUT_BYTES} bytes (3 x 384 x 128 float32) and the model's batch must be the one "
            "asked for; re-run preprocess, or convert for this batch size."
        )
    return PcbError(
        f"{tool} failed with exit status {returncode}: {detail}.{hint} Full output: {log_file}"
    )


def _complete(
    layout: RunLayout, key: str, split: str, model_md5: str, stems: Sequence[str], bins: dict
) -> bool:
    """The split's dumps are all there, made by this model, each with its recorded digest,
    from the bins there now. Anything less and ais_bench infers the whole split again (it
    takes a folder, not a list), saying why when dumps were damaged or bins changed."""
    try:
        record = read_json(infer_record_path(layout, key, split))
    except (OSError, ValueError):
        return False
    if not (record.get("complete") and record.get("model_md5") == model_md5):
        return False
    digests = SplitDigests.load(dumps_record_path(layout, key, split))
    if digests.model != model_md5:
        return False
    names = {dump_name(s): s for s in stems}
    sources = {name: bins[stem] for name, stem in names.items()}
    reuse = check_files(digests, list(names), sources, FEATURE_BYTES, digest_store(layout.root))
    for line in describe_redo(split, reuse, "dump", "bin"):
        print(f"{line} (ais_bench infers the whole split again)")
    return not reuse.pending


def _record_digests(
    layout: RunLayout, key: str, split: str, model_md5: str, stems: Sequence[str], bins: dict
) -> None:
    """What ais_bench wrote, by digest, with the digest of the bin each dump came from."""
    store = digest_store(layout.root)
    digests = SplitDigests(dumps_record_path(layout, key, split), model=model_md5)
    for stem in stems:
        path = layout.dumps_dir(key, split) / dump_name(stem)
        digests.put(path.name, store.digest(path), bins[stem])
    digests.write()
    store.save()


def ais_infer(
    layout: RunLayout,
    chip: str,
    batch_size: int = 16,
    device: int = 0,
    aoe: bool = False,
    dynamic: bool = False,
    quiet: bool = False,
    python: str | None = None,
) -> dict[str, int]:
    """Run both splits through the converted model on one NPU; returns images per split."""
    if batch_size <= 0:
        raise PcbError(f"batch size must be positive, got {batch_size}")
    chip = resolve_chip(chip, [device])
    stems_by_split = {split: read_stems(layout.info_path(split)) for split in SPLITS}
    inputs_by_split = {
        split: check_bins(layout.bins_dir(split), stems) for split, stems in stems_by_split.items()
    }
    # Bins changed since preprocessing are refused here, as by `pcb infer`.
    bins = {
        split: bin_digests(layout, split, stems, check_size=False)
        for split, stems in stems_by_split.items()
    }
    om = require_om(layout, None if dynamic else batch_size, aoe, chip)
    if dynamic:
        gears = _gears(om)
        if gears and batch_size not in gears:
            raise PcbError(
                f"{om.name} takes batch sizes {gears}, not {batch_size}: convert with "
                f"--dynamic --batch-sizes including {batch_size}"
            )
    key = backend_key(chip, "ais_bench", aoe, dynamic)
    model_md5 = file_md5(om)
    python = python or sys.executable
    # The installed version decides the options: read before anything runs.
    profile = read_profile(python)
    version = version_text(python)
    (tool_device,) = tool_device_ids([device])
    logs = logs_dir(layout, "infer", key)
    counts: dict[str, int] = {}
    for split in SPLITS:
        stems, inputs = stems_by_split[split], inputs_by_split[split]
        dest = layout.dumps_dir(key, split)
        record_path = infer_record_path(layout, key, split)
        counts[split] = len(stems)
        if _complete(layout, key, split, model_md5, stems, bins[split]):
            print(f"{split}: all {len(stems)} dumps already complete ({key})")
            continue
        # No record may vouch for the dumps about to be replaced.
        dumps_record_path(layout, key, split).unlink(missing_ok=True)
        if dest.is_dir():
            for old in dest.glob("*.bin"):
                old.unlink()
        scratch = scratch_dir(layout, key, split)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        command = infer_command(
            layout, om, key, split, batch_size, tool_device, dynamic, python, profile
        )
        record: dict[str, Any] = {
            "backend": "ais_bench",
            "backend_version": version,
            "platform": platform_name(chip, aoe, dynamic),
            "split": split,
            "model": str(om),
            "model_md5": model_md5,
            "batch_size": batch_size,
            "device": device,
            "tool_device": tool_device,
            "tool_profile": profile.name,
            "count": len(stems),
            "complete": False,
            "started": utc_now(),
            "host": host_name(),
            "command": command,
        }
        atomic_write_json(record_path, record)
        print(f"==> {split}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        result = run_tool(
            command, env={"ASCEND_PROCESS_LOG_PATH": str(logs / "ascend")}, quiet=quiet
        )
        wall = time.perf_counter() - start
        log_file = logs / f"{split}.out"
        atomic_write_text(log_file, f"$ {' '.join(command)}\n{result.output}")
        if result.returncode != 0:
            raise tool_failure("ais_bench", result.returncode, result.output, log_file)
        files = find_run_files(scratch)
        summary = read_summaries(result.output, files.summary, batch_size)
        if files.summary is not None:
            atomic_write_bytes(logs / f"{split}{SUMMARY_SUFFIX}", files.summary.read_bytes())
        count = collect_dumps(files.folder, inputs, batch_size, dest)
        shutil.rmtree(scratch, ignore_errors=True)
        _record_digests(layout, key, split, model_md5, stems, bins[split])
        record.update(
            complete=True,
            finished=utc_now(),
            inferred=count,
            wall_s=round(wall, 3),
            # End to end, as the guide's [e2e] line: file reads, inference, output writes.
            images_per_s=round(count / wall, 3) if wall > 0 else None,
            summary=summary.to_dict(),
            summary_source="summary JSON, checked against the printed summary"
            if files.summary is not None
            else "printed summary only (the run wrote no summary JSON)",
        )
        atomic_write_json(record_path, record)
        print(f"{split}: {count} dumps in {dest}")
    scratch_root = layout.root / "dumps" / key / ".ais_bench"
    if scratch_root.is_dir() and not any(scratch_root.iterdir()):
        scratch_root.rmdir()
    print(f"evaluate them with: python -m pcb evaluate --run {layout.root} --backend {key}")
    return counts


def _gears(om: Path) -> list[int]:
    try:
        record = read_json(om_record_path(om))
    except (OSError, ValueError):
        return []
    for arg in (record.get("options") or {}).get("args", []):
        if arg.startswith("--dynamic_batch_size="):
            return [int(v) for v in arg.split("=", 1)[1].split(",") if v.strip()]
    return []
