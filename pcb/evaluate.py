"""The evaluate stage: per-image feature dumps -> squared Euclidean ranking -> CMC and mAP."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .constants import DEMO_MARKER, FEATURE_BYTES, FEATURE_DIM, SPLITS
from .errors import PcbError, did_you_mean
from .fileio import atomic_write_json, read_json
from .layout import RunLayout
from .metrics import (
    AP_TIES,
    AP_VARIANTS,
    RankingResult,
    evaluate_ranking,
    grouped_average_precision,
    squared_euclidean,
)
from .progress import progress
from .provenance import stamp
from .ranked_samples import ranked_samples
from .skipped import describe_skipped, read_skipped

if TYPE_CHECKING:
    from .dataset import ImageRecord

# Dump names for image <stem> that our own stages and imports write: ais_bench numbers outputs
# from 0, the old Ascend benchmark tool from 1, and our own backends may write <stem>.bin.
DUMP_SUFFIXES = ("_0.bin", "_1.bin", ".bin")
# Any output of a multi-output model is `<stem>_<k>.bin`: the guide's 7-output model (the
# feature and six classifiers' scores) gives _0.._6 under ais_bench and _1.._7 under the old
# benchmark tool. The feature is the one output of FEATURE_BYTES.
_OUTPUT_INDEX = re.compile(r"_(\d+)\.bin$")

# How many names an error message lists before giving the count of the rest.
LISTED = 10

# The CMC ranks the stage reports, as in the guide.
REPORTED_RANKS = (1, 5, 10)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED])
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return f"{len(items)}: {shown}{more}"


def resolve_dump_dir(dump_dir: Path) -> Path:
    """The folder that holds the dumps: `dump_dir`, or its only subfolder when it has no .bin.

    ais_bench writes into a timestamped `<YYYY_MM_DD-HH_MM_SS>/` folder under the output path
    it is given (with a `*_summary.json` beside it), so a user can point at either.
    """
    dump_dir = Path(dump_dir)
    if not dump_dir.is_dir():
        raise PcbError(
            f"feature dump folder {dump_dir} does not exist: run `python -m pcb infer` for this "
            "run and backend first, or pass --dumps pointing at a folder with query/ and gallery/"
        )
    entries = list(os.scandir(dump_dir))
    has_bins = any(e.name.endswith(".bin") and e.is_file() for e in entries)
    subdirs = [e for e in entries if e.is_dir()]
    if not has_bins and len(subdirs) == 1:
        return Path(subdirs[0].path)
    return dump_dir


def dump_stems(name: str) -> list[str]:
    """The image stems a dump name may belong to: `<stem>.bin`, or `<stem>_<k>.bin` (a stem
    may itself end in digits, as Market's `_00` does, so both are candidates)."""
    if not name.endswith(".bin"):
        return []
    candidates = [name[: -len(".bin")]]
    found = _OUTPUT_INDEX.search(name)
    if found:
        candidates.append(name[: found.start()])
    return candidates


@dataclass
class DumpMatch:
    """One dump path per image, in the images' order, and the other outputs left aside."""

    paths: list[Path]
    ignored: list[str] = field(default_factory=list)  # other outputs of multi-output models

    @property
    def note(self) -> str:
        if not self.ignored:
            return ""
        suffixes = sorted({n[n.rfind("_") :] for n in self.ignored if _OUTPUT_INDEX.search(n)})
        return (
            f"{len(self.ignored)} dumps of other outputs ignored ({', '.join(suffixes[:8])}): "
            f"each image's feature is its {FEATURE_BYTES}-byte output, the others (such as the "
            "guide's 7-output model's classifier scores) are not used"
        )


def match_dumps(dump_dir: Path, stems: Sequence[str]) -> DumpMatch:
    """Each stem's dump; where an image has several outputs, the one of FEATURE_BYTES.

    Every .bin must belong to a stem; an image with no dump, or with several of the feature's
    size, is an error."""
    folder = resolve_dump_dir(dump_dir)
    wanted = set(stems)
    by_stem: dict[str, list[os.DirEntry]] = {}
    extra: list[str] = []
    for entry in os.scandir(folder):
        if not entry.is_file() or not entry.name.endswith(".bin"):
            continue
        owners = [stem for stem in dump_stems(entry.name) if stem in wanted]
        if owners:
            by_stem.setdefault(owners[0], []).append(entry)
        else:
            extra.append(entry.name)
    paths: list[Path] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    ignored: list[str] = []
    for stem in stems:
        entries = sorted(by_stem.get(stem, []), key=lambda e: e.name)
        if not entries:
            missing.append(stem)
            continue
        if len(entries) == 1:
            paths.append(Path(entries[0].path))  # its size is checked when it is read
            continue
        features = [e for e in entries if e.stat().st_size == FEATURE_BYTES]
        if len(features) == 1:
            paths.append(Path(features[0].path))
            ignored += [e.name for e in entries if e is not features[0]]
            continue
        if features:
            ambiguous.append(" / ".join(e.name for e in features))
        else:
            sizes = ", ".join(f"{e.name} ({e.stat().st_size} bytes)" for e in entries)
            ambiguous.append(f"{sizes}: none of {FEATURE_BYTES} bytes")
    problems = []
    if missing:
        problems.append(
            f"images with no dump <stem>_0.bin, <stem>_1.bin or <stem>.bin {_listing(missing)}"
        )
    if extra:
        problems.append(f"dumps that match no image {_listing(sorted(extra))}")
    if ambiguous:
        problems.append(f"images with more than one dump {_listing(ambiguous)}")
    if problems:
        raise PcbError(
            f"the feature dumps in {folder} do not match the {len(stems)} images of the split: "
            + "; ".join(problems)
            + ". Re-run `python -m pcb infer` into an empty folder for this run, or point "
            "--dumps at the folder holding this dataset's query/ and gallery/ dumps"
        )
    return DumpMatch(paths, ignored)


def find_dumps(dump_dir: Path, stems: Sequence[str]) -> list[Path]:
    """One dump path per stem, in the order of `stems` (see match_dumps)."""
    return match_dumps(dump_dir, stems).paths


def load_features(
    dump_dir: Path,
    records: Sequence[ImageRecord],
    notes: list[str] | None = None,
    progress: Any = None,
) -> np.ndarray:
    """(len(records) x 12288) float32 features, row i read from the dump of records[i].

    Each dump is one image's raw float32 output (2048 x 6 x 1), FEATURE_BYTES long.
    Non-.bin files (ais_bench's *_summary.json) are ignored; so are an image's other outputs
    beside its feature, which `notes` (when given) is told about.
    """
    match = match_dumps(dump_dir, [record.stem for record in records])
    if notes is not None and match.note:
        notes.append(match.note)
    paths = match.paths
    sizes = [(path, path.stat().st_size) for path in paths]
    wrong = [f"{path.name} ({size} bytes)" for path, size in sizes if size != FEATURE_BYTES]
    if wrong:
        raise PcbError(
            f"feature dumps in {paths[0].parent} must be {FEATURE_BYTES} bytes each (2048 x 6 "
            f"float32), found {_listing(wrong)}: these are not this model's single-image "
            "outputs; re-run `python -m pcb infer` (one output per image, float32)"
        )
    features = np.empty((len(paths), FEATURE_DIM), dtype=np.float32)
    for row, path in enumerate(paths):
        # Raw native float32, as every backend writes it; read in place, no per-file array.
        with open(path, "rb") as handle:
            read = handle.readinto(memoryview(features[row]).cast("B"))
        if read != FEATURE_BYTES:
            raise PcbError(f"{path} shrank to {read} bytes while being read: re-run inference")
        if progress is not None:
            progress.update(1)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        names = [paths[i].name for i in np.flatnonzero(bad)]
        raise PcbError(
            f"feature dumps in {paths[0].parent} hold NaN or Inf, {_listing(names)}: the model "
            "or backend produced invalid outputs; check the inputs (bins) and re-run inference"
        )
    return features


def _labels(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    camids = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    return pids, camids


def evaluate_features(
    qf: np.ndarray,
    gf: np.ndarray,
    query_records: Sequence[ImageRecord],
    gallery_records: Sequence[ImageRecord],
    max_rank: int = 50,
    progress: Any = None,
    ap_ties: str = "ranked",
    samples: list[dict[str, Any]] | None = None,
) -> RankingResult:
    """Rank the gallery for every query by squared Euclidean distance (no normalisation, as in
    the guide) and score it with the Market-1501 protocol; `progress` is told of each chunk
    of queries ranked. `ap_ties` "grouped": AP with tied distances as one threshold, as the
    upstream evaluation computes it (metrics.AP_TIES). `samples`, when given, receives the
    top-10 of a few chosen queries for the ranked-results picture (ranked_samples.py)."""
    if ap_ties not in AP_TIES:
        raise PcbError(
            f"--ap-ties {ap_ties}{did_you_mean(ap_ties, AP_TIES)}: use one of {', '.join(AP_TIES)}"
        )
    for name, features, records in (("query", qf, query_records), ("gallery", gf, gallery_records)):
        if np.ndim(features) != 2 or len(features) != len(records):
            raise PcbError(
                f"{name} features have shape {np.shape(features)} but there are {len(records)} "
                f"{name} images: give one feature row per image, in record order"
            )
    q_pids, q_camids = _labels(query_records)
    g_pids, g_camids = _labels(gallery_records)
    distmat = squared_euclidean(qf, gf)
    result = evaluate_ranking(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, progress=progress
    )
    if ap_ties == "grouped":
        ap = grouped_average_precision(
            distmat, q_pids, g_pids, q_camids, g_camids, result.valid_queries
        )
        result = replace(result, ap=ap, mAP=float(ap.mean()))
    if samples is not None:
        samples += ranked_samples(
            distmat, query_records, gallery_records, result.valid_queries, result.ap
        )
    return result


def format_summary(summary: dict[str, Any]) -> str:
    """The guide's wording: 'top-1 92.1%  top-5 96.9%  top-10 98.1%  mAP 77.4%'."""
    parts = [f"top-{k} {100 * summary[f'top{k}']:.1f}%" for k in REPORTED_RANKS]
    parts.append(f"mAP {100 * summary['mAP']:.1f}%")
    return "  ".join(parts)


def _backend_version(dump_root: Path) -> str | None:
    """The runtime version the infer stage recorded beside the dumps, when it did."""
    for split in SPLITS:
        try:
            record = read_json(dump_root.parent / f"{split}.json")
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("backend_version"):
            return str(record["backend_version"])
    return None


def evaluate_run(
    dataset_root: Path,
    layout: RunLayout,
    backend: str = "onnxruntime",
    dumps: Path | None = None,
    max_rank: int = 50,
    quiet: bool = False,
    ap_ties: str = "ranked",
) -> dict[str, Any]:
    """Evaluate one backend's dumps of a run and write <run>/eval/<backend>.json.

    `dumps` is a folder holding query/ and gallery/ (default: <run>/dumps/<backend>).
    """
    # Imported here, not at the top: the feature and metric helpers above need no dataset.
    from .dataset import find_market_root, load_split

    if max_rank < max(REPORTED_RANKS):
        raise PcbError(
            f"max_rank {max_rank} is below {max(REPORTED_RANKS)}: top-10 needs max_rank >= 10"
        )
    market_root = find_market_root(Path(dataset_root))
    # Images preprocessing skipped (--skip-bad-images) have no bin, so no dump: evaluate the
    # rest, and say so in the record the report reads. Those it named by their file alone
    # (a dangling link, a bad name) are no records at all; any other such file is refused.
    skipped = {split: read_skipped(layout, split) for split in SPLITS}
    records = {
        split: load_split(market_root, split, allowed={i.name for i in skipped[split]})
        for split in SPLITS
    }
    left_out: dict[str, list[str]] = {}
    for split in SPLITS:
        left_out[split] = sorted(image.name for image in skipped[split])
        records[split] = [r for r in records[split] if r.path.name not in left_out[split]]
        if not records[split]:
            raise PcbError(
                f"every {split} image was skipped as unusable ({layout.skipped_path(split)}): "
                "nothing left to evaluate; re-download or re-unpack the dataset"
            )
    dump_root = Path(dumps) if dumps is not None else layout.dumps_dir(backend, "query").parent
    notes: list[str] = []
    # Reading the dumps and ranking: the two long steps at Market scale (20k files, 3k queries).
    samples: list[dict[str, Any]] = []
    count = sum(len(records[split]) for split in SPLITS)
    with progress(count, f"evaluate {backend}: reading dumps", "img", quiet) as bar:
        features = {
            split: load_features(dump_root / split, records[split], notes, bar) for split in SPLITS
        }
    with progress(len(records["query"]), f"evaluate {backend}: ranking", "query", quiet) as bar:
        result = evaluate_features(
            features["query"],
            features["gallery"],
            records["query"],
            records["gallery"],
            max_rank=max_rank,
            progress=bar,
            ap_ties=ap_ties,
            samples=samples,
        )
    summary: dict[str, Any] = {
        "backend": backend,
        "dataset_root": str(market_root),
        "synthetic": (market_root / DEMO_MARKER).is_file(),
        "num_query": len(records["query"]),
        "num_gallery": len(records["gallery"]),
        "num_gallery_ids": len({r.pid for r in records["gallery"]}),
        "num_valid_queries": result.num_valid_queries,
        **{f"top{k}": result.top(k) for k in REPORTED_RANKS},
        "mAP": result.mAP,
        "cmc": [float(v) for v in result.cmc],
        "ap_variant": AP_VARIANTS[ap_ties],
        "ap_ties": ap_ties,
        "dumps": str(dump_root),
        "backend_version": _backend_version(dump_root),
        "skipped_images": left_out,
        "dump_notes": notes,
        # The ranked-results picture's queries and their top-10 (ranked_samples.py).
        "ranked_samples": samples,
        **stamp(),
    }
    atomic_write_json(layout.eval_path(backend), summary)
    print(
        f"{backend}: {summary['num_query']} queries ({result.num_valid_queries} valid), "
        f"{summary['num_gallery']} gallery images"
    )
    print(format_summary(summary))
    for note in [*notes, describe_skipped(left_out)]:
        if note:
            print(f"note: {note}")
    print(f"written {layout.eval_path(backend)} (AP: {AP_VARIANTS[ap_ties]})")
    return summary
