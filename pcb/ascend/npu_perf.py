"""NPU throughput with ais_bench: per batch size, a pure inference (`--loop`) on each chosen
device at the same time, each device's figure from its summary JSON (checked against what it
printed), and their sum.

Several devices run in ais_bench's own multi-device mode (`--device 0,1,2,3`, one process,
which prints each device's throughput and their `summary throughput`) where the installed
version has it (2023-06 on, see ais_bench.py); else one ais_bench per device, started together.

Records: with one device, one record per batch size under the platform name (Ascend310P3,
Ascend310P3-aoe); with several, one per device (Ascend310P3-dev<N>, scope "chip") and their
sum under the platform name, whose scope says what it covers: "card" when the devices are
exactly the chips of one card (read from `npu-smi info`), else "<n> chips".
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import file_md5, read_json
from ..infer import perf_table
from ..layout import RunLayout
from ..perf import LatencyStats, PerfRecord, write_perf_records
from ..provenance import stamp
from ..tool import start_tool
from .ais_bench import (
    DEFAULT_PROFILE,
    AisBenchProfile,
    ais_bench_command,
    read_profile,
    version_text,
)
from .ais_bench_output import (
    CROSS_CHECK_TOLERANCE,
    AisSummary,
    find_device_run_files,
    find_run_files,
    parse_multi_device,
    parse_summary_json,
)
from .chips import backend_key, device_platform, platform_name, soc_version
from .convert import require_om
from .npu_infer import read_summaries, tool_failure
from .npu_smi import NpuSmiInfo, card_scope, read_npu_smi_info, resolve_chip
from .visible import tool_device_ids


@dataclass(frozen=True)
class DeviceRun:
    device: int
    summary: AisSummary
    wall_s: float
    log: Path
    source: str = "summary JSON, checked against the printed summary"


PERF_HINT = "run the perf stage in the cann image"


def perf_scratch(layout: RunLayout, key: str, batch_size: int) -> Path:
    return layout.root / "logs" / "perf" / key / f"bs{batch_size}"


def perf_command(
    om: Path,
    output: Path,
    batch_size: int,
    devices: Sequence[int],
    iterations: int,
    warmup: int,
    dynamic: bool,
    python: str = "python3",
    profile: AisBenchProfile = DEFAULT_PROFILE,
) -> list[str]:
    """A timing run on `devices` (the ids the tool knows them by): pure inference, `iterations`
    batches (ais_bench's --loop) after `warmup` untimed ones."""
    return ais_bench_command(
        str(om),
        output=str(output),
        batch_size=batch_size,
        devices=devices,
        loop=iterations,
        warmup=warmup,
        dym_batch=batch_size if dynamic else None,
        display_all_summary=True,
        python=python,
        profile=profile,
    )


@dataclass(frozen=True)
class TimingCommands:
    """How one batch size is timed: the commands, each with the host devices it covers."""

    commands: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...]
    multi_device: bool


def timing_commands(
    om: Path,
    batch_size: int,
    devices: Sequence[int],
    tool_ids: Sequence[int],
    scratch: Path,
    iterations: int,
    warmup: int,
    dynamic: bool,
    python: str = "python3",
    profile: AisBenchProfile = DEFAULT_PROFILE,
) -> TimingCommands:
    """One multi-device ais_bench where the version has the mode, else one per device.
    `devices` are host ids (the records' and folders' names), `tool_ids` the tool's."""
    if len(devices) > 1 and profile.multi_device:
        command = perf_command(
            om, scratch / "all", batch_size, tool_ids, iterations, warmup, dynamic, python, profile
        )
        return TimingCommands(((tuple(devices), tuple(command)),), True)
    commands = []
    for device, tool_id in zip(devices, tool_ids):
        output = scratch / f"dev{device}"
        command = perf_command(
            om, output, batch_size, [tool_id], iterations, warmup, dynamic, python, profile
        )
        commands.append(((device,), tuple(command)))
    return TimingCommands(tuple(commands), False)


def _output_of(command: Sequence[str]) -> Path:
    return Path(command[list(command).index("--output") + 1])


def _single_run(
    device: int, output: Path, text: str, batch_size: int, wall: float, log: Path
) -> DeviceRun:
    files = find_run_files(output)
    summary = read_summaries(text, files.summary, batch_size)
    # The pure-inference outputs (zeros in, features out) are of no use: keep the summaries.
    shutil.rmtree(files.folder, ignore_errors=True)
    if files.summary is None:
        return DeviceRun(device, summary, wall, log, "printed summary only (no summary JSON)")
    return DeviceRun(device, summary, wall, log)


def _multi_device_runs(
    devices: Sequence[int],
    tool_ids: Sequence[int],
    output: Path,
    text: str,
    wall: float,
    log: Path,
) -> tuple[list[DeviceRun], float]:
    """Each device's summary JSON, checked against its printed line; and the summed
    throughput ais_bench printed, checked against the JSONs' sum."""
    printed = parse_multi_device(text)
    if printed is None:
        raise PcbError(
            f"ais_bench ran devices {list(devices)} in one process but printed no "
            f"`i:N device_D throughput:` line: see {log}"
        )
    files = find_device_run_files(output)
    runs = []
    for device, tool_id in zip(devices, tool_ids):
        if tool_id not in files or tool_id not in printed.per_device:
            raise PcbError(
                f"ais_bench's multi-device run has no result for device {device} (the tool's "
                f"{tool_id}): see {log}"
            )
        summary = parse_summary_json(read_json(files[tool_id].summary), str(files[tool_id].summary))
        line = printed.per_device[tool_id]
        if abs(line - summary.throughput) > CROSS_CHECK_TOLERANCE * max(line, 1e-9):
            raise PcbError(
                f"device {device}: ais_bench printed a throughput of {line:g} but its summary "
                f"JSON says {summary.throughput:g}: not of the same run; re-run the stage"
            )
        shutil.rmtree(files[tool_id].folder, ignore_errors=True)
        source = "summary JSON, checked against its printed per-device line"
        runs.append(DeviceRun(device, summary, wall, log, source))
    summed = sum(run.summary.throughput for run in runs)
    if abs(printed.total - summed) > CROSS_CHECK_TOLERANCE * max(summed, 1e-9):
        raise PcbError(
            f"ais_bench's summary throughput {printed.total:g} is not the sum of its devices' "
            f"summary JSONs ({summed:g}): re-run the stage"
        )
    return runs, printed.total


def run_devices(
    om: Path,
    batch_size: int,
    devices: Sequence[int],
    scratch: Path,
    iterations: int,
    warmup: int,
    dynamic: bool,
    python: str,
    quiet: bool,
    profile: AisBenchProfile = DEFAULT_PROFILE,
    tool_ids: Sequence[int] | None = None,
) -> tuple[list[DeviceRun], float | None]:
    """Time `devices` (host ids) at once; returns each device's run and, for the
    multi-device mode, the summed throughput ais_bench printed."""
    shutil.rmtree(scratch, ignore_errors=True)
    tool_ids = list(devices) if tool_ids is None else list(tool_ids)
    timing = timing_commands(
        om, batch_size, devices, tool_ids, scratch, iterations, warmup, dynamic, python, profile
    )
    processes = []
    for covered, command in timing.commands:
        name = f"dev{covered[0]}" if len(covered) == 1 else "all"
        _output_of(command).mkdir(parents=True)
        if not quiet:
            label = "devices" if len(covered) > 1 else "device"
            print(f"==> {label} {','.join(map(str, covered))}: {' '.join(command)}", flush=True)
        log = scratch / f"{name}.out"
        env = {"ASCEND_PROCESS_LOG_PATH": str(scratch / f"{name}-ascend-log")}
        started = time.perf_counter()
        processes.append((covered, command, log, started, start_tool(command, log, env, PERF_HINT)))
    runs: list[DeviceRun] = []
    failures = []
    total = None
    for covered, command, log, started, process in processes:
        returncode = process.wait()
        wall = time.perf_counter() - started
        text = log.read_text(encoding="utf-8", errors="replace")
        if not quiet:
            print(text, end="" if text.endswith("\n") else "\n")
        label = ",".join(map(str, covered))
        if returncode != 0:
            what = f"ais_bench on device{'s' if len(covered) > 1 else ''} {label}"
            failures.append(tool_failure(what, returncode, text, log))
            continue
        if timing.multi_device:
            found, total = _multi_device_runs(
                covered, tool_ids, _output_of(command), text, wall, log
            )
            runs += found
        else:
            runs.append(_single_run(covered[0], _output_of(command), text, batch_size, wall, log))
    if failures:
        raise failures[0]
    return runs, total


def _device_record(
    run: DeviceRun, platform: str, batch_size: int, scope: str, common: dict[str, Any], tool: str
) -> PerfRecord:
    summary = run.summary
    extra = dict(common)
    extra.update(
        device_id=run.device, wall_s=round(run.wall_s, 3), log=str(run.log), source=run.source
    )
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
    printed_total: float | None,
    platform: str,
    batch_size: int,
    scope: str,
    card: int | None,
    common: dict[str, Any],
    tool: str,
) -> PerfRecord:
    stats = [r.summary.npu_compute for r in runs]
    chips = [s.latency() for s in stats]
    # The chips' batch latencies side by side: the fastest min, the mean of means, the slowest
    # p99 and max; the throughput is the sum of the chips' figures, measured concurrently.
    latency = LatencyStats(
        min_ms=min(c.min_ms for c in chips),
        mean_ms=sum(c.mean_ms for c in chips) / len(chips),
        median_ms=sorted(c.median_ms for c in chips)[len(chips) // 2],
        p99_ms=max(c.p99_ms for c in chips),
        max_ms=max(c.max_ms for c in chips),
    )
    devices = [r.device for r in runs]
    extra = dict(common)
    how = (
        "ais_bench's multi-device mode (one process), its printed `summary throughput`"
        if printed_total is not None
        else "one ais_bench per chip, started together, their throughputs summed"
    )
    extra.update(
        devices=devices,
        per_device_images_per_s={str(r.device): r.summary.throughput for r in runs},
        summed_over=f"{len(runs)} chips measured at the same time (devices "
        f"{','.join(str(d) for d in devices)})",
        summed_by=how,
        latency_note="per-chip batch latency across the chips: min of mins, mean of means, "
        "median of medians, max of p99s and maxes",
    )
    if card is not None:
        extra["card"] = card
    return PerfRecord(
        platform=platform,
        backend="ais_bench",
        batch_size=batch_size,
        images_per_s=(
            printed_total if printed_total is not None else sum(r.summary.throughput for r in runs)
        ),
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
    iterations: int = 100,
    warmup: int = 5,
    aoe: bool = False,
    dynamic: bool = False,
    quiet: bool = False,
    python: str | None = None,
) -> list[PerfRecord]:
    """Throughput per batch size on the chosen devices; writes perf/<platform>-ais_bench.json."""
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise PcbError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if iterations <= 0 or warmup < 0:
        raise PcbError(f"need --iterations >= 1 and --warmup >= 0, got {iterations} and {warmup}")
    devices = list(devices)
    chip = resolve_chip(chip, devices)
    info, topology = _topology()
    scope, card = card_scope(devices, info)
    platform = platform_name(chip, aoe, dynamic)
    key = backend_key(chip, "ais_bench", aoe, dynamic)
    python = python or sys.executable
    # The installed version decides the options and the multi-device mode: read it first.
    profile = read_profile(python)
    tool = version_text(python)
    tool_ids = tool_device_ids(devices)
    records: list[PerfRecord] = []
    for batch_size in batch_sizes:
        om = require_om(layout, None if dynamic else batch_size, aoe, chip)
        scratch = perf_scratch(layout, key, batch_size)
        runs, printed_total = run_devices(
            om,
            batch_size,
            devices,
            scratch,
            iterations,
            warmup,
            dynamic,
            python,
            quiet,
            profile,
            tool_ids,
        )
        common: dict[str, Any] = {
            "soc_version": soc_version(chip),
            "om": om.name,
            "om_md5": file_md5(om),
            "loop": iterations,  # ais_bench's --loop
            "warmup": warmup,
            "aoe": aoe,
            "dynamic": dynamic,
            "input": "pure inference (ais_bench without --input: zeros)",
            "npu_smi": topology,
            # The driver's side of the record: npu-smi's `npu-smi <v> Version: <v>` header.
            "npu_smi_version": info.version if info is not None else None,
            "tool_profile": profile.name,
            "tool_devices": dict(zip(map(str, devices), tool_ids)),
            **stamp(),
        }
        if len(runs) == 1:
            records.append(_device_record(runs[0], platform, batch_size, scope, common, tool))
        else:
            for run in runs:
                name = device_platform(platform, run.device)
                records.append(_device_record(run, name, batch_size, "chip", common, tool))
            records.append(
                _summed_record(runs, printed_total, platform, batch_size, scope, card, common, tool)
            )
    path = layout.perf_path(key)
    write_perf_records(path, records)
    print(f"{platform} on devices {','.join(map(str, devices))}: per {scope}")
    print(perf_table([r for r in records if r.platform == platform]))
    print(f"written: {path}")
    return records
