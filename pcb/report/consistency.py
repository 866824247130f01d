"""Whether several runs may share one table: same checkpoint, same dataset.

Figures from different weights or different images are not comparable, and a table that puts
them side by side reads as if they were; the report refuses unless the user forces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from ..errors import PcbError
from .runs import RunRecords

COUNT_KEYS = ("num_query", "num_gallery", "num_gallery_ids")


@dataclass(frozen=True)
class DatasetIdentity:
    name: str
    num_query: int | None
    num_gallery: int | None
    num_gallery_ids: int | None
    synthetic: bool

    def describe(self) -> str:
        kind = ", synthetic demo" if self.synthetic else ""
        return (
            f"{self.name} (query {self.num_query}, gallery {self.num_gallery}, "
            f"{self.num_gallery_ids} gallery ids{kind})"
        )


def dataset_identity(record: dict) -> DatasetIdentity:
    root = record.get("dataset_root")
    # The folder name only: the same dataset sits at different paths on different hosts.
    name = PurePath(str(root)).name if root else str(record.get("dataset", "?"))
    counts = [record.get(k) for k in COUNT_KEYS]
    return DatasetIdentity(name, *counts, synthetic=record.get("synthetic") is True)


@dataclass(frozen=True)
class Consistency:
    differences: list[str]  # reasons the runs are not comparable
    unchecked: list[str]  # what could not be checked (a record is missing)
    checkpoint_md5: str | None  # the one checkpoint of all runs, when they agree
    dataset: DatasetIdentity | None


def _checkpoints(runs: Sequence[RunRecords]) -> tuple[dict[str, list[str]], list[str]]:
    by_md5: dict[str, list[str]] = {}
    unchecked = []
    for run in runs:
        md5 = (run.export or {}).get("checkpoint_md5")
        if md5:
            name = PurePath(str(run.export.get("checkpoint", "?"))).name  # type: ignore[union-attr]
            by_md5.setdefault(str(md5), []).append(f"{run.label} ({name})")
        else:
            unchecked.append(f"checkpoint of run {run.label} unknown (no model/export.json)")
    return by_md5, unchecked


def _datasets(runs: Sequence[RunRecords]) -> tuple[dict[DatasetIdentity, list[str]], list[str]]:
    by_identity: dict[DatasetIdentity, list[str]] = {}
    unchecked = []
    for run in runs:
        if not run.evaluations:
            unchecked.append(f"dataset of run {run.label} unknown (no eval/*.json)")
        for evaluation in run.evaluations:
            where = f"{run.label}/{evaluation.source.file}"
            by_identity.setdefault(dataset_identity(evaluation.record), []).append(where)
    return by_identity, unchecked


def check_runs(runs: Sequence[RunRecords]) -> Consistency:
    """Compare every run's checkpoint md5 and every evaluation's dataset; nothing raised here."""
    by_md5, unchecked = _checkpoints(runs)
    by_identity, unchecked_data = _datasets(runs)
    differences = []
    if len(by_md5) > 1:
        listed = "; ".join(f"md5 {md5}: {', '.join(who)}" for md5, who in by_md5.items())
        differences.append(f"different checkpoints ({listed})")
    if len(by_identity) > 1:
        listed = "; ".join(
            f"{ident.describe()}: {', '.join(who)}" for ident, who in by_identity.items()
        )
        differences.append(f"different datasets ({listed})")
    return Consistency(
        differences=differences,
        # A lone run has nothing to disagree with, so a missing record is only worth a word
        # when there are several.
        unchecked=unchecked + unchecked_data if len(runs) > 1 else [],
        checkpoint_md5=next(iter(by_md5)) if len(by_md5) == 1 else None,
        dataset=next(iter(by_identity)) if len(by_identity) == 1 else None,
    )


def require_comparable(consistency: Consistency, force: bool) -> list[str]:
    """The warnings to print and record; raises on a difference unless forced."""
    if consistency.differences and not force:
        raise PcbError(
            "these runs are not comparable: "
            + "; ".join(consistency.differences)
            + ". Compare runs made from the same checkpoint and dataset, or pass --force to put "
            "them in one report anyway (the report then says they differ)"
        )
    forced = [f"FORCED: {d}" for d in consistency.differences]
    return forced + consistency.unchecked
