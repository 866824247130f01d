"""The convert stage: <run>/model/pcb.onnx -> <run>/model/om/pcb_bs<N>.om per batch size (atc),
optionally pcb_bs<N>_aoe.om (AOE operator tuning) or one dynamic-batch pcb_dynamic.om.

A model is converted again only when its ONNX or its options changed: each .om has a record
beside it (pcb_bs<N>.json) with the ONNX md5, the options and the .om md5. atc writes under a
temporary name that is renamed once it succeeded, so a failed or interrupted conversion never
leaves an .om that looks finished.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import atomic_write_json, atomic_write_text, file_md5, read_json, read_record
from ..layout import RunLayout
from ..provenance import stamp
from ..tool import run_tool
from .atc import aoe_command, atc_command, failure_message
from .cann_version import read_cann_version
from .chips import soc_version
from .visible import tool_device_ids

PATH_OPTIONS = ("--model=", "--output=")


def om_dir(layout: RunLayout) -> Path:
    return layout.model_dir / "om"


def om_stem(batch_size: int | None, aoe: bool = False) -> str:
    """pcb_bs16, pcb_bs16_aoe, or pcb_dynamic (batch_size None)."""
    if batch_size is None:
        if aoe:
            raise PcbError("AOE tunes static models only: leave out --dynamic or --aoe")
        return "pcb_dynamic"
    return f"pcb_bs{batch_size}" + ("_aoe" if aoe else "")


def om_path(layout: RunLayout, batch_size: int | None, aoe: bool = False) -> Path:
    return om_dir(layout) / f"{om_stem(batch_size, aoe)}.om"


def om_record_path(om: Path) -> Path:
    return om.with_suffix(".json")


def convert_logs_dir(layout: RunLayout, stem: str) -> Path:
    return layout.root / "logs" / "convert" / stem


@dataclass(frozen=True)
class ConvertJob:
    """One model to make: its name, the tool, the command (with the real paths)."""

    stem: str
    tool: str
    command: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _options(command: Sequence[str], chip: str) -> dict[str, Any]:
    # What decides the model besides the ONNX: the command without its file paths.
    return {
        "tool": command[0],
        "args": [a for a in command[1:] if not a.startswith(PATH_OPTIONS)],
        "soc_version": soc_version(chip),
    }


def convert_jobs(
    layout: RunLayout,
    chip: str,
    batch_sizes: Sequence[int],
    dynamic: bool = False,
    aoe: bool = False,
    device: int = 0,
) -> list[ConvertJob]:
    """The models to make, in order: atc per batch size (or one dynamic model), then AOE."""
    if not batch_sizes:
        raise PcbError("no batch size to convert for: give some, e.g. --batch-sizes 1,16")
    if dynamic and aoe:
        raise PcbError("AOE tunes static models only: leave out --dynamic or --aoe")
    model = str(layout.onnx_path)
    folder = om_dir(layout)
    sizes = sorted(set(batch_sizes))
    jobs = []
    if dynamic:
        stem = om_stem(None)
        command = atc_command(model, str(folder / stem), chip, dynamic_batch_sizes=sizes)
        jobs.append(ConvertJob(stem, "atc", tuple(command), _options(command, chip)))
        return jobs
    for size in sizes:
        stem = om_stem(size)
        command = atc_command(model, str(folder / stem), chip, batch_size=size)
        jobs.append(ConvertJob(stem, "atc", tuple(command), _options(command, chip)))
    if aoe:
        for size in sizes:
            stem = om_stem(size, aoe=True)
            command = aoe_command(model, str(folder / stem), size, device=device)
            jobs.append(ConvertJob(stem, "aoe", tuple(command), _options(command, chip)))
    return jobs


def _with_output(command: Sequence[str], prefix: Path) -> list[str]:
    return [f"--output={prefix}" if a.startswith("--output=") else a for a in command]


def is_up_to_date(om: Path, onnx_md5: str, options: dict[str, Any]) -> bool:
    record = read_record(om_record_path(om)) if om.is_file() else {}
    return (
        bool(record)
        and record.get("onnx_md5") == onnx_md5
        and record.get("options") == options
        and record.get("om_md5") == file_md5(om)
    )


def _written_model(prefix: Path) -> Path | None:
    exact = prefix.parent / f"{prefix.name}.om"
    if exact.is_file():
        return exact
    # Some toolkits add the host's OS and architecture to the name.
    found = sorted(prefix.parent.glob(f"{prefix.name}*.om"))
    return found[0] if len(found) == 1 else None


def run_job(job: ConvertJob, layout: RunLayout, onnx_md5: str, quiet: bool = False) -> dict:
    """Run one conversion; write the .om and its record, or raise PcbError with atc's error."""
    folder = om_dir(layout)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{job.stem}.om"
    logs = convert_logs_dir(layout, job.stem)
    logs.mkdir(parents=True, exist_ok=True)
    prefix = folder / f".partial-{job.stem}"
    for stale in folder.glob(f"{prefix.name}*"):
        stale.unlink()
    command = _with_output(job.command, prefix)
    if not quiet:
        print(f"==> {job.stem}.om: {' '.join(job.command)}", flush=True)
    started = time.monotonic()
    # atc leaves fusion_result.json and kernel_meta/ in its working directory: a throwaway one.
    work = Path(tempfile.mkdtemp(prefix=f"pcb-{job.tool}-"))
    try:
        result = run_tool(
            command, env={"ASCEND_PROCESS_LOG_PATH": str(logs)}, cwd=work, quiet=quiet
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output_file = logs / f"{job.tool}.out"
    atomic_write_text(output_file, f"$ {' '.join(command)}\n{result.output}")
    written = _written_model(prefix)
    if result.returncode != 0 or written is None:
        if written is not None:
            written.unlink()
        if result.returncode == 0:
            raise PcbError(
                f"{job.tool} exited 0 but wrote no model {prefix}.om for {job.stem}: see "
                f"{output_file}; check the disk space and the --output folder's permissions"
            )
        raise PcbError(
            failure_message(
                job.tool,
                f"{job.stem}.om",
                result.returncode,
                result.output,
                str(output_file),
                str(logs),
            )
        )
    written.replace(target)
    record = {
        "om": target.name,
        "om_md5": file_md5(target),
        "om_bytes": target.stat().st_size,
        "onnx": str(layout.onnx_path),
        "onnx_md5": onnx_md5,
        "tool": job.tool,
        "options": job.options,
        "command": list(job.command),
        "seconds": round(time.monotonic() - started, 1),
        "log": str(output_file),
        **stamp(),
    }
    atomic_write_json(om_record_path(target), record)
    return record


def convert_models(
    layout: RunLayout,
    chip: str,
    batch_sizes: Sequence[int],
    dynamic: bool = False,
    aoe: bool = False,
    device: int = 0,
    force: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Make every model the plan names; returns their paths (converted or kept)."""
    if not layout.onnx_path.is_file():
        raise PcbError(f"ONNX model not found: {layout.onnx_path}; run `pcb export` first")
    onnx_md5 = file_md5(layout.onnx_path)
    # The toolkit's version, read before anything runs: a version pcb does not support is
    # named here, and another toolkit makes other models (part of each model's options).
    cann = read_cann_version()
    made = []
    # AOE runs on the NPU: in a container, the chip's id there (visible.py).
    tool_device = tool_device_ids([device])[0] if aoe else device
    for planned in convert_jobs(layout, chip, batch_sizes, dynamic, aoe, tool_device):
        job = replace(planned, options={**planned.options, "cann_version": cann.text})
        target = om_dir(layout) / f"{job.stem}.om"
        if not force and is_up_to_date(target, onnx_md5, job.options):
            print(f"{target.name}: up to date (same ONNX and {job.tool} options)")
        else:
            record = run_job(job, layout, onnx_md5, quiet)
            print(f"{target.name}: written by {job.tool} in {record['seconds']} s")
        made.append(target)
    return made


def require_om(layout: RunLayout, batch_size: int | None, aoe: bool, chip: str) -> Path:
    """The converted model for an inference stage, checked against the chip it was made for."""
    path = om_path(layout, batch_size, aoe)
    record_path = om_record_path(path)
    what = "--dynamic" if batch_size is None else f"--batch-sizes {batch_size}"
    fix = f"run `python -m pcb convert --run {layout.root} --chip {chip} {what}" + (
        " --aoe`" if aoe else "`"
    )
    if not path.is_file() or not record_path.is_file():
        raise PcbError(
            f"converted model {path} not found (or its record {record_path.name}): {fix}"
        )
    record = read_json(record_path)
    made_for = (record.get("options") or {}).get("soc_version")
    if made_for and made_for != soc_version(chip):
        raise PcbError(f"{path.name} was converted for {made_for}, not {soc_version(chip)}: {fix}")
    return path
