"""One run folder's records, each tagged with where it came from (run, host, tool, time).

Runs are copied between hosts (the NPU and the GPU live in different machines), so every figure
carries its provenance from the moment it is read; the report never has to guess it later.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..constants import REFERENCE_BACKEND
from ..errors import PcbError
from ..fileio import read_json
from ..layout import RunLayout
from ..perf import PerfRecord
from ..record.digest import save_stores
from ..record.digest_records import is_digest_record
from ..record.manifest import ManifestView
from ..skipped import describe_skipped

METRICS = ("top1", "top5", "top10", "mAP")
HOST_ASSUMED = "assumed: the report's host (the records name none)"
MTIME = "file modification time (the record has none)"
NO_MANIFEST = (
    "no manifest.json (made by an older pcb, or copied without it): its figures are shown "
    "without checking that the stages which wrote them completed"
)


@dataclass(frozen=True)
class Source:
    """Where one figure came from: enough to find the file and the machine again."""

    run: str  # the run's label in this report
    path: str  # the run folder as given
    file: str  # relative to the run folder
    host: str
    host_source: str  # "record" or HOST_ASSUMED
    tool: str
    tool_version: str
    timestamp: str
    timestamp_source: str  # "record" or MTIME

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SourceIndex:
    """Numbers each distinct source once, in the order first met: the footnote numbers."""

    def __init__(self) -> None:
        self._ids: dict[Source, str] = {}

    def id(self, source: Source) -> str:
        return self._ids.setdefault(source, str(len(self._ids) + 1))

    def entry(self, source: Source) -> dict[str, Any]:
        return {"id": self.id(source), **source.to_dict()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {sid: source.to_dict() for source, sid in self._ids.items()}


@dataclass(frozen=True)
class Measurement:
    record: PerfRecord
    source: Source


@dataclass(frozen=True)
class Evaluation:
    record: dict[str, Any]
    source: Source

    @property
    def backend(self) -> str:
        return str(self.record.get("backend", "?"))


@dataclass
class RunRecords:
    root: Path
    label: str
    host: str
    host_source: str
    export: dict[str, Any] | None
    evaluations: list[Evaluation] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    inference: dict[str, dict[str, Any]] = field(default_factory=dict)
    demo: bool = False
    # What the reader of the report must know about this run: records left out because no
    # complete stage vouches for them, images preprocessing skipped, a missing manifest.
    notes: list[str] = field(default_factory=list)
    manifest: bool = False
    skipped_images: dict[str, list[str]] = field(default_factory=dict)


def run_labels(roots: list[Path]) -> list[str]:
    """Short unique names: the folder name, with parents added until no two runs share one."""
    parts = [Path(r).resolve().parts for r in roots]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r) for r in roots]


def _mtime(path: Path) -> str:
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return stamp.isoformat(timespec="seconds")


def _read(path: Path, stage: str) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise PcbError(f"cannot read {path} ({error}); re-run `pcb {stage}`") from error


def _record_host(*records: Any) -> str | None:
    """The first host a record names: top level (eval, export, infer) or extra (perf)."""
    for record in records:
        if not isinstance(record, dict):
            continue
        host = record.get("host") or (record.get("extra") or {}).get("host")
        if host:
            return str(host)
    return None


def _load_evaluation(path: Path) -> dict[str, Any]:
    record = _read(path, "evaluate")
    missing = [m for m in METRICS if not isinstance(record, dict) or m not in record]
    if missing:
        raise PcbError(f"{path} lacks {', '.join(missing)}; re-run `pcb evaluate`")
    record.setdefault("backend", path.stem)
    return record


def _load_perf(path: Path) -> tuple[list[dict[str, Any]], list[PerfRecord]]:
    try:
        payload = read_json(path)
        raw = list(payload["records"])
        return raw, [PerfRecord.from_dict(item) for item in raw]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PcbError(f"cannot read {path} ({error}); re-run `pcb perf`") from error


def _backend_version(inference: dict[str, dict[str, Any]], backend: str) -> str:
    for record in inference.get(backend, {}).values():
        if isinstance(record, dict) and record.get("backend_version"):
            return str(record["backend_version"])
    return ""


def load_run(root: Path, label: str, report_host: str, demo: bool | None = None) -> RunRecords:
    """Read every record of one run folder; refuse a folder with nothing to report."""
    layout = RunLayout(Path(root))
    if not layout.root.is_dir():
        raise PcbError(f"run folder {layout.root} does not exist: pass a folder made by `pcb`")
    view = ManifestView.load(layout.root)
    notes: list[str] = [] if view.present else [NO_MANIFEST]

    def trusted(path: Path) -> bool:
        # Figures come only from files a stage recorded complete wrote, unchanged since.
        problem = view.problem(path)
        if problem:
            notes.append(f"left out {problem}")
        return problem is None

    export = None
    if layout.export_record.is_file() and trusted(layout.export_record):
        export = _read(layout.export_record, "export")
    inference: dict[str, dict[str, Any]] = {}
    for path in sorted((layout.root / "dumps").glob("*/*.json")):
        if is_digest_record(path):
            continue  # per-image digests, bookkeeping of the infer stage, not a figure
        if trusted(path):
            inference.setdefault(path.parent.name, {})[path.stem] = _read(path, "infer")

    eval_paths = [p for p in sorted((layout.root / "eval").glob("*.json")) if trusted(p)]
    perf_paths = [p for p in sorted((layout.root / "perf").glob("*.json")) if trusted(p)]
    if not eval_paths and not perf_paths:
        why = f" ({'; '.join(notes)})" if notes and view.present else ""
        raise PcbError(
            f"nothing to report in {layout.root}: no eval/*.json and no perf/*.json from a "
            f"completed stage{why}; run `pcb infer` then `pcb evaluate` for accuracy, and/or "
            "`pcb perf` for throughput"
        )
    evaluations = [(p, _load_evaluation(p)) for p in eval_paths]
    # The onnxruntime reference first, so every table lists it before the backends held to it.
    evaluations.sort(key=lambda pr: pr[1]["backend"] != REFERENCE_BACKEND)
    perf = [(p, *_load_perf(p)) for p in perf_paths]

    # One host for the whole run when any record names it; older records name none, and then
    # the run is taken to be this host's, said so wherever the host is shown.
    inference_records = [r for by_split in inference.values() for r in by_split.values()]
    perf_records = [item for _, raw, _ in perf for item in raw]
    named = _record_host(export, *(r for _, r in evaluations), *inference_records, *perf_records)
    run_host, host_source = (named, "record") if named else (report_host, HOST_ASSUMED)

    def source(path: Path, record: Any, tool: str, tool_version: str) -> Source:
        host = _record_host(record)
        stamp = record.get("timestamp") or (record.get("extra") or {}).get("timestamp")
        return Source(
            run=label,
            path=str(root),
            file=str(path.relative_to(layout.root)),
            host=host or run_host,
            host_source="record" if host else host_source,
            tool=tool,
            tool_version=tool_version,
            timestamp=str(stamp) if stamp else _mtime(path),
            timestamp_source="record" if stamp else MTIME,
        )

    run = RunRecords(
        root=Path(root), label=label, host=run_host, host_source=host_source, export=export
    )
    run.inference = inference
    for path, record in evaluations:
        backend = str(record["backend"])
        tool_version = str(record.get("backend_version") or _backend_version(inference, backend))
        run.evaluations.append(Evaluation(record, source(path, record, backend, tool_version)))
    for path, raw, records in perf:
        for item, record in zip(raw, records):
            src = source(path, item, record.tool or record.backend, record.tool_version)
            run.measurements.append(Measurement(record, src))
    run.demo = is_demo(run.evaluations) if demo is None else demo
    run.manifest = view.present
    if view.unchecked:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(view.unchecked.items()))
        notes.append(f"not re-checked by content ({listed})")
    save_stores()  # what checking the records hashed, for the next report or stage
    run.skipped_images = _skipped(run.evaluations)
    skipped = describe_skipped(run.skipped_images)
    run.notes = notes + ([skipped] if skipped else [])
    return run


def _skipped(evaluations: list[Evaluation]) -> dict[str, list[str]]:
    """The images preprocessing skipped, as the evaluations recorded them (all share bins)."""
    for evaluation in evaluations:
        skipped = evaluation.record.get("skipped_images")
        if isinstance(skipped, dict) and any(skipped.values()):
            return {str(k): [str(n) for n in v] for k, v in skipped.items()}
    return {}


def is_demo(evaluations: list[Evaluation]) -> bool:
    """Accuracy measured on the generated demo dataset is not comparable to the guide's."""
    return any(e.record.get("synthetic") is True for e in evaluations)


def load_runs(roots: list[Path], demo: bool | None = None) -> list[RunRecords]:
    resolved = [Path(r).resolve() for r in roots]
    repeated = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if repeated:
        raise PcbError(f"run folder given more than once: {', '.join(repeated)}; give each once")
    host = socket.gethostname()
    labels = run_labels([Path(r) for r in roots])
    return [load_run(Path(r), label, host, demo) for r, label in zip(roots, labels)]
