"""A demo run (dataset, checkpoint, exported model, bins) that several benchmarks share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..layout import RunLayout


@dataclass(frozen=True)
class DemoRun:
    dataset_root: Path
    checkpoint: Path
    layout: RunLayout


def prepare_demo_run(root: Path, identities: int = 24, quiet: bool = True) -> DemoRun:
    """Demo data, export and preprocessing under `root`, in this process (no pipeline timing)."""
    from ..demo import write_demo
    from ..export import export_onnx
    from ..preprocess import preprocess_dataset

    paths = write_demo(Path(root) / "data" / "demo", identities=identities)
    layout = RunLayout(Path(root) / "results" / "demo")
    export_onnx(paths.checkpoint, layout)
    preprocess_dataset(paths.dataset_root, layout, quiet=quiet)
    return DemoRun(paths.dataset_root, paths.checkpoint, layout)
