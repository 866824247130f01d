"""NPU throughput with ais_bench: per batch size, a pure inference (`--loop`) on each chosen
device at the same time, each device's figure from its printed summary and summary JSON (checked
against each other), and their sum.

Records: with one device, one record per batch size under the platform name (Ascend310P3,
Ascend310P3-aoe); with several, one per device (Ascend310P3-dev<N>, scope "chip") and their
sum under the platform name, whose scope says what it covers: "card" when the devices are
exactly the chips of one card (read from `npu-smi info`), else "<n> chips".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import file_md5
from ..infer import perf_table
from ..layout import RunLayout
from ..perf import LatencyStats, PerfRecord, write_perf_records
from ..provenance import stamp
from .ais_bench import AisSummary, ais_bench_command, version_text
from .chips import backend_key, device_platform, platform_name, soc_version
from .convert import require_om
from .npu_infer import find_output_folder, read_summaries, tool_failure
from .npu_smi import NpuSmiInfo, card_scope, read_npu_smi_info, resolve_chip


@dataclass(frozen=True)
class DeviceRun:
    device: int
    summary: AisSummary
    wall_s: float
    log: Path


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    # The child keeps its own descriptor of the log; the parent's closes with the block.
    with open(log, "w", encoding="utf-8") as handle:
        try:
            return subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        except FileNotFoundError:
            raise PcbError(
                f"{command[0]} not found: run the perf stage in the cann image"
            ) from None


def perf_scratch(layout: RunLayout, key: str, batch_size: int) -> Path:
    return layout.root / "logs" / "perf" / key / f"bs{batch_size}"


def perf_command(
    om: Path,
    output: Path,
    batch_size: int,
    device: int,
    loop: int,
    warmup: int,
    dynamic: bool,
    python: str = "python3",
) -> list[str]:
    """One device's timing run: pure inference, `loop` batches after `warmup` untimed ones."""
    return ais_bench_command(
        str(om),
        output=str(output),
        batch_size=batch_size,
        device=device,
        loop=loop,
        warmup=warmup,
        dym_batch=batch_size if dynamic else None,
        display_all_summary=True,
        python=python,
    )


def run_devices(
    om: Path,
    batch_size: int,
    devices: Sequence[int],
    scratch: Path,
    loop: int,
    warmup: int,
    dynamic: bool,
    python: str,
    quiet: bool,
) -> list[DeviceRun]:
    """One ais_bench per device, all at once; each one's summaries read and cross-checked."""
    shutil.rmtree(scratch, ignore_errors=True)
    processes = []
    for device in devices:
        output = scratch / f"dev{device}"
        output.mkdir(parents=True)
        command = perf_command(om, output, batch_size, device, loop, warmup, dynamic, python)
        if not quiet:
            print(f"==> device {device}: {' '.join(command)}", flush=True)
        log = scratch / f"dev{device}.out"
        env = {"ASCEND_PROCESS_LOG_PATH": str(scratch / f"dev{device}-ascend-log")}
        started = time.perf_counter()
        processes.append((device, log, output, started, _start(command, log, env)))
    runs = []
    failures = []
    for device, log, output, started, process in processes:
        returncode = process.wait()
        wall = time.perf_counter() - started
        text = log.read_text(encoding="utf-8", errors="replace")
        if not quiet:
            print(text, end="" if text.endswith("\n") else "\n")
        if returncode != 0:
            failures.append(tool_failure(f"ais_bench on device {device}", returncode, text, log))
            continue
        folder, summary_path = find_output_folder(output)
        summary = read_summaries(text, summary_path, batch_size)
        # The pure-inference outputs (zeros in, features out) are of no use: keep the summaries.
        shutil.rmtree(folder, ignore_errors=True)
        runs.append(DeviceRun(device, summary, wall, log))
    if failures:
        raise failures[0]
    return runs


def _device_record(
    run: DeviceRun, platform: str, batch_size: int, scope: str, common: dict[str, Any], tool: str
) -> PerfRecord:
    summary = run.summary
    extra = dict(common)
    extra.update(device_id=run.device, wall_s=round(run.wall_s, 3), log=str(run.log))
    if summary.h2d is not None:
        extra["H2D_latency_ms"] = summary.h2d.to_dict()
    if summary.d2h is not None:
        extra["D2H_latency_ms"] = summary.d2h.to_dict()
    return PerfRecord(
        platform=platform,
        backend="ais_bench",
        batch_size=batch_size,
        images_per_s=summary.throughput,
        latency=summary.npu_compute.latency(),
        iterations=summary.npu_compute.count or int(common["loop"]),
        scope=scope,
        tool="ais_bench",
        tool_version=tool,
        device=f"{common['soc_version']} (device {run.device})",
        extra=extra,
    )


def _summed_record(
    runs: Sequence[DeviceRun],
    platform: str,
    batch_size: int,
    scope: str,
    card: int | None,
    common: dict[str, Any],
    tool: str,
) -> PerfRecord:
    stats = [r.summary.npu_compute for r in runs]
    # The chips' batch latencies side by side: the fastest min, the mean of means, the slowest
    # p99 and max; the throughput is the sum of the chips' figures, measured concurrently.
    latency = LatencyStats(
        min_ms=min(s.min for s in stats),
        mean_ms=sum(s.mean for s in stats) / len(stats),
        median_ms=sorted(s.median for s in stats)[len(stats) // 2],
        p99_ms=max(s.p99 for s in stats),
        max_ms=max(s.max for s in stats),
    )
    devices = [r.device for r in runs]
    extra = dict(common)
    extra.update(
        devices=devices,
        per_device_images_per_s={str(r.device): r.summary.throughput for r in runs},
        summed_over=f"{len(runs)} chips measured at the same time (devices "
        f"{','.join(str(d) for d in devices)})",
        latency_note="per-chip batch latency across the chips: min of mins, mean of means, "
        "median of medians, max of p99s and maxes",
    )
    if card is not None:
        extra["card"] = card
    return PerfRecord(
        platform=platform,
        backend="ais_bench",
        batch_size=batch_size,
        images_per_s=sum(r.summary.throughput for r in runs),
        latency=latency,
        iterations=min(s.count or int(common["loop"]) for s in stats),
        scope=scope,
        tool="ais_bench",
        tool_version=tool,
        device=f"{common['soc_version']} x {len(runs)} (devices {','.join(map(str, devices))})",
        extra=extra,
    )


def _topology() -> tuple[NpuSmiInfo | None, str]:
    try:
        return read_npu_smi_info(), "read"
    except PcbError as error:
        # Only the label of the sum depends on it: measure anyway and say why it is "chips".
        return None, f"unavailable ({error})"


def ais_perf(
    layout: RunLayout,
    chip: str,
    batch_sizes: Sequence[int],
    devices: Sequence[int] = (0,),
    loop: int = 100,
    warmup: int = 5,
    aoe: bool = False,
    dynamic: bool = False,
    quiet: bool = False,
    python: str | None = None,
) -> list[PerfRecord]:
    """Throughput per batch size on the chosen devices; writes perf/<platform>-ais_bench.json."""
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise PcbError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if loop <= 0 or warmup < 0:
        raise PcbError(f"need --iterations >= 1 and --warmup >= 0, got {loop} and {warmup}")
    devices = list(devices)
    chip = resolve_chip(chip, devices)
    info, topology = _topology()
    scope, card = card_scope(devices, info)
    platform = platform_name(chip, aoe, dynamic)
    key = backend_key(chip, "ais_bench", aoe, dynamic)
    python = python or sys.executable
    tool = version_text(python)
    records: list[PerfRecord] = []
    for batch_size in batch_sizes:
        om = require_om(layout, None if dynamic else batch_size, aoe, chip)
        scratch = perf_scratch(layout, key, batch_size)
        runs = run_devices(
            om,
            batch_size,
            devices,
            scratch,
            loop,
            warmup,
            dynamic,
            python,
            quiet,
        )
        common: dict[str, Any] = {
            "soc_version": soc_version(chip),
            "om": om.name,
            "om_md5": file_md5(om),
            "loop": loop,
            "warmup": warmup,
            "aoe": aoe,
            "dynamic": dynamic,
            "input": "pure inference (ais_bench without --input: zeros)",
            "npu_smi": topology,
            **stamp(),
        }
        if len(runs) == 1:
            records.append(_device_record(runs[0], platform, batch_size, scope, common, tool))
        else:
            for run in runs:
                name = device_platform(platform, run.device)
                records.append(_device_record(run, name, batch_size, "chip", common, tool))
            records.append(_summed_record(runs, platform, batch_size, scope, card, common, tool))
    path = layout.perf_path(key)
    write_perf_records(path, records)
    print(f"{platform} on devices {','.join(map(str, devices))}: per {scope}")
    print(perf_table([r for r in records if r.platform == platform]))
    print(f"written: {path}")
    return records
