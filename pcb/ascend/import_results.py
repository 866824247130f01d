"""Bring results made by hand with the guide's own commands (the old benchmark tool) into a run
folder: its perf files become perf records, its dumps land where the evaluate stage reads them.

Looked for in the given folder and in a `result/` folder inside it (where the tool writes):

- `[query_|gallery_]perf_vision_batchsize_<bs>_device_<d>.txt` (the guide's renames too);
- `PureInfer_perf_of_<model>_in_device_<d>.txt` (a pure inference, `-round=N`); its batch size
  from the model's name (`..._bs16...`) or --batch-size;
- `dumpOutput_device<d>_query/` and `dumpOutput_device<d>_gallery/` (the guide renames the
  tool's `dumpOutput_device<d>/` so after each split), or `query/` and `gallery/`; a bare
  `dumpOutput_device<d>/` is split by the run's own image lists when it has them.

The tool names each output `<stem>_<k>.bin` from k = 1. The guide's model has one output, the
feature (`_1`); ModelZoo's later PCB export has seven (the feature and six classifiers' scores,
`_1` .. `_7`): per image, the one output of a feature's size (49,152 bytes) is imported and the
others are left out, with a note.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..constants import FEATURE_BYTES, SPLITS
from ..errors import PcbError
from ..evaluate import dump_stems
from ..fileio import atomic_write_json
from ..infer import infer_record_path, read_stems
from ..layout import RunLayout
from ..perf import LatencyStats, PerfRecord, write_perf_records
from ..provenance import stamp, utc_now
from .benchmark_legacy import (
    DUMP_FOLDER,
    LegacyPerf,
    PerfFileName,
    parse_benchmark_perf,
    parse_perf_file_name,
    parse_pure_infer,
    parse_pure_infer_file_name,
)
from .chips import (
    backend_key,
    default_chips_per_card,
    device_platform,
    normalize_chip,
    platform_name,
    soc_version,
)

TOOL = "benchmark"
TOOL_VERSION = "unknown (imported: results made by hand with the guide's commands)"
# Which of several perf files of one batch and device is the figure: the guide quotes query's.
PREFIX_ORDER = ("", "query", "gallery")


def _roots(source: Path) -> list[Path]:
    return [source] + ([source / "result"] if (source / "result").is_dir() else [])


def _entries(source: Path) -> Iterator[os.DirEntry]:
    for root in _roots(source):
        yield from os.scandir(root)


def find_perf_files(source: Path) -> dict[tuple[int, int], list[tuple[PerfFileName, Path]]]:
    found: dict[tuple[int, int], list[tuple[PerfFileName, Path]]] = {}
    for entry in _entries(source):
        name = parse_perf_file_name(entry.name) if entry.is_file() else None
        if name is not None:
            found.setdefault((name.batch_size, name.device), []).append((name, Path(entry.path)))
    return found


def _preference(item: tuple[PerfFileName, Path]) -> tuple[int, str]:
    prefix = item[0].prefix
    rank = PREFIX_ORDER.index(prefix) if prefix in PREFIX_ORDER else len(PREFIX_ORDER)
    return rank, item[1].name


def find_dump_folders(source: Path, layout: RunLayout) -> dict[str, list[Path]]:
    """split -> dump files, from the folders the tool (and the guide's renames) leave."""
    by_split: dict[str, list[Path]] = {}
    bare: list[Path] = []
    for entry in _entries(source):
        if not entry.is_dir():
            continue
        found = DUMP_FOLDER.match(entry.name)
        split = found.group("split") if found else (entry.name if entry.name in SPLITS else None)
        if split:
            by_split.setdefault(split, []).extend(_dumps_in(Path(entry.path)))
        elif found:
            bare.append(Path(entry.path))
    if bare:
        by_split = _split_bare(bare, layout, by_split)
    return by_split


def has_dump_folders(source: Path) -> bool:
    """Whether `source` holds dump folders of the tool (checked on the host, before running)."""
    source = Path(source)
    return source.is_dir() and any(
        e.is_dir() and (DUMP_FOLDER.match(e.name) is not None or e.name in SPLITS)
        for e in _entries(source)
    )


def _dumps_in(folder: Path) -> list[Path]:
    return sorted(
        Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.endswith(".bin")
    )


def _tool_stem(name: str) -> str:
    """`<stem>_<k>.bin` -> stem: the tool always appends the output number."""
    candidates = dump_stems(name)
    return candidates[-1]


def _split_bare(
    folders: list[Path], layout: RunLayout, by_split: dict[str, list[Path]]
) -> dict[str, list[Path]]:
    """A dumpOutput_device<d>/ holding both splits: sorted by the run's own image lists."""
    if not all(layout.info_path(split).is_file() for split in SPLITS):
        names = ", ".join(f.name for f in folders)
        raise PcbError(
            f"{names}: which split do these dumps belong to? Rename the folder after each run "
            "as the guide does (dumpOutput_device0_query, dumpOutput_device0_gallery), or "
            "preprocess this run first so that its image lists tell them apart"
        )
    split_of = {stem: split for split in SPLITS for stem in read_stems(layout.info_path(split))}
    unknown = []
    for folder in folders:
        for path in _dumps_in(folder):
            split = next((split_of[s] for s in dump_stems(path.name) if s in split_of), None)
            if split is None:
                unknown.append(path.name)
            else:
                by_split.setdefault(split, []).append(path)
    if unknown:
        raise PcbError(
            f"{len(unknown)} dumps match no image of this run's lists (e.g. {unknown[0]}): "
            "were they made from another dataset?"
        )
    return by_split


def _place(source: Path, target: Path) -> None:
    # A hard link costs nothing and cannot be half-written; a copy where links cannot cross.
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def feature_dumps(paths: list[Path], split: str) -> tuple[list[Path], list[Path]]:
    """Per image, its feature: the one output of FEATURE_BYTES; returns (features, the other
    outputs left out). PcbError naming the images without one."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(_tool_stem(path.name), []).append(path)
    chosen, left, wrong = [], [], []
    for stem, group in sorted(by_stem.items()):
        features = [p for p in group if p.stat().st_size == FEATURE_BYTES]
        if len(features) != 1:
            sizes = ", ".join(f"{p.name} ({p.stat().st_size} bytes)" for p in sorted(group))
            wrong.append(f"{stem}: {sizes}")
            continue
        chosen.append(features[0])
        left += [p for p in group if p != features[0]]
    if wrong:
        raise PcbError(
            f"{len(wrong)} {split} images have no single dump of {FEATURE_BYTES} bytes (one "
            f"image's 2048 x 6 float32 feature), e.g. {wrong[0]}: not this model's per-image "
            "outputs"
        )
    return chosen, left


def import_dumps(
    by_split: dict[str, list[Path]],
    layout: RunLayout,
    key: str,
    source: Path,
    batch_size: int | None,
) -> dict[str, int]:
    counts = {}
    for split, found in sorted(by_split.items()):
        paths, left = feature_dumps(found, split)
        if left:
            print(
                f"note: {split}: {len(left)} dumps of the model's other outputs left out (each "
                f"image's feature is its {FEATURE_BYTES}-byte output), e.g. {left[0].name}"
            )
        dest = layout.dumps_dir(key, split)
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.bin"):
            old.unlink()
        for path in paths:
            _place(path, dest / path.name)
        atomic_write_json(
            infer_record_path(layout, key, split),
            {
                "backend": TOOL,
                "backend_version": TOOL_VERSION,
                "split": split,
                "source": str(source),
                "batch_size": batch_size,
                "count": len(paths),
                "other_outputs_left_out": len(left),
                "complete": True,
                "imported": utc_now(),
                **stamp(),
            },
        )
        counts[split] = len(paths)
    return counts


def find_pure_infer_files(
    source: Path, batch_size: int | None
) -> dict[tuple[int, int], list[tuple[PerfFileName, Path]]]:
    """PureInfer files by (batch size, device), named as perf files with prefix "PureInfer"."""
    found: dict[tuple[int, int], list[tuple[PerfFileName, Path]]] = {}
    for entry in _entries(source):
        name = parse_pure_infer_file_name(entry.name) if entry.is_file() else None
        if name is None:
            continue
        batch = name.batch_size or batch_size
        if batch is None:
            raise PcbError(
                f"{entry.name}: its model name does not say the batch size (`_bs<N>`): pass "
                "--batch-size"
            )
        if batch_size is not None and name.batch_size not in (None, batch_size):
            continue
        perf_name = PerfFileName(batch, name.device, "PureInfer")
        found.setdefault((batch, name.device), []).append((perf_name, Path(entry.path)))
    return found


def _pure_as_perf(path: Path) -> LegacyPerf:
    pure = parse_pure_infer(path.read_text(errors="replace"), str(path))
    return LegacyPerf(
        interface_rate=pure.rate,
        infer_rate=pure.rate,
        e2e_rate=None,
        e2e_latency_ms=None,
        infer_module_latency_ms=pure.latency_ms,
        modules={"PureInfer": {"ave_throughputRate": pure.rate, "ave_latency": pure.latency_ms}},
    )


def _latency(batch_size: int, rate: float) -> LatencyStats:
    # The tool prints no distribution: the batch time its rate implies, for every statistic.
    implied = 1000.0 * batch_size / rate
    return LatencyStats(implied, implied, implied, implied, implied)


def perf_records(
    perf: LegacyPerf,
    name: PerfFileName,
    path: Path,
    others: dict[str, float],
    chip: str,
    chips_per_card: int,
) -> list[PerfRecord]:
    """The chip's record, and the guide's card figure (x chips per card) beside it."""
    platform = platform_name(chip)
    extra: dict[str, Any] = {
        "file": str(path),
        "interface_throughput_rate": perf.interface_rate,
        "infer_throughput_rate": perf.infer_rate,
        "e2e_throughput_rate": perf.e2e_rate,
        "e2e_latency_ms": perf.e2e_latency_ms,
        "infer_module_latency_ms": perf.infer_module_latency_ms,
        "latency_note": "implied by the chip's rate (1000 x batch / rate); the tool reports "
        "no latency distribution",
        "measured_by": (
            "a pure inference (PureInfer file: ave_throughputRate)"
            if name.prefix == "PureInfer"
            else "a run over the dataset (the infer module's Interface throughputRate)"
        ),
        "device_id": name.device,
        "soc_version": soc_version(chip),
        **stamp(),
    }
    if others:
        extra["other_files"] = others
    common = {
        "backend": TOOL,
        "batch_size": name.batch_size,
        "iterations": 0,
        "tool": TOOL,
        "tool_version": TOOL_VERSION,
    }
    chip_latency = _latency(name.batch_size, perf.interface_rate)
    if chips_per_card == 1:
        return [
            PerfRecord(
                platform=platform,
                images_per_s=perf.interface_rate,
                latency=chip_latency,
                scope="card",
                device=f"{soc_version(chip)} (device {name.device}; one chip per card)",
                extra={**extra, "chips_per_card": 1},
                **common,
            )
        ]
    card_rate = perf.card_rate(chips_per_card)
    return [
        PerfRecord(
            platform=device_platform(platform, name.device),
            images_per_s=perf.interface_rate,
            latency=chip_latency,
            scope="chip",
            device=f"{soc_version(chip)} (device {name.device})",
            extra=extra,
            **common,
        ),
        PerfRecord(
            platform=platform,
            images_per_s=card_rate,
            latency=chip_latency,
            scope="card",
            device=f"{soc_version(chip)} card ({chips_per_card} chips)",
            extra={
                **extra,
                "chips_per_card": chips_per_card,
                "estimated": f"one chip's Interface throughputRate {perf.interface_rate:g} x "
                f"{chips_per_card} chips per card, as the guide computes its 310 column",
            },
            **common,
        ),
    ]


def import_results(
    source: Path,
    layout: RunLayout,
    chip: str = "310",
    batch_size: int | None = None,
    chips_per_card: int | None = None,
) -> dict[str, Any]:
    """Import perf files and dumps from `source`; returns what was imported."""
    source = Path(source)
    if not source.is_dir():
        raise PcbError(
            f"results folder {source} not found: give the benchmark tool's result/ folder"
        )
    chip = normalize_chip(chip, allow_auto=False)
    per_card = default_chips_per_card(chip) if chips_per_card is None else chips_per_card
    if per_card <= 0:
        raise PcbError(f"--chips-per-card must be positive, got {per_card}")
    key = backend_key(chip, TOOL)
    files = find_perf_files(source)
    if batch_size is not None:
        files = {k: v for k, v in files.items() if k[0] == batch_size}
    pure = {k: v for k, v in find_pure_infer_files(source, batch_size).items() if k not in files}
    dumps = find_dump_folders(source, layout)
    if not files and not pure and not dumps:
        wanted = f"batch size {batch_size}'s " if batch_size is not None else ""
        raise PcbError(
            f"nothing to import in {source} (nor in its result/): no {wanted}"
            "perf_vision_batchsize_<bs>_device_<d>.txt, no PureInfer_perf_of_<model>_in_device_"
            "<d>.txt and no dumpOutput_device<d>_query/ or _gallery/ folder of the benchmark tool"
        )
    records: list[PerfRecord] = []
    for (_batch, _device), candidates in sorted(files.items()):
        candidates.sort(key=_preference)
        name, path = candidates[0]
        parsed = {
            p.name: parse_benchmark_perf(p.read_text(errors="replace"), str(p))
            for _, p in candidates
        }
        others = {n: v.interface_rate for n, v in parsed.items() if n != path.name}
        records += perf_records(parsed[path.name], name, path, others, chip, per_card)
    # A dataset run's perf file is the guide's figure; a pure inference's only where none is.
    for (_batch, _device), candidates in sorted(pure.items()):
        name, path = sorted(candidates, key=lambda item: item[1].name)[0]
        records += perf_records(_pure_as_perf(path), name, path, {}, chip, per_card)
    result: dict[str, Any] = {"backend": key, "perf": [], "dumps": {}}
    if records:
        write_perf_records(layout.perf_path(key), records)
        result["perf"] = [r.to_dict() for r in records]
        for record in records:
            print(
                f"{record.platform} batch {record.batch_size}: {record.images_per_s:g} images/s "
                f"per {record.scope}"
            )
        print(f"written: {layout.perf_path(key)}")
    if dumps:
        counts = import_dumps(dumps, layout, key, source, batch_size)
        result["dumps"] = counts
        for split, count in counts.items():
            print(f"{split}: {count} dumps in {layout.dumps_dir(key, split)}")
        missing = [s for s in SPLITS if s not in counts]
        if missing:
            print(f"note: no {' or '.join(missing)} dumps found: evaluate needs both splits")
        else:
            print(f"evaluate them with: python -m pcb evaluate --run {layout.root} --backend {key}")
    return result
