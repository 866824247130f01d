"""Where each stage reads and writes inside a run folder (results/<run>/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Where a report comparing several runs writes when no --out is given.
DEFAULT_COMPARISON_DIR = Path("results") / "comparison"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def onnx_path(self) -> Path:
        return self.model_dir / "pcb.onnx"

    def static_onnx_path(self, batch_size: int) -> Path:
        return self.model_dir / f"pcb_bs{batch_size}.onnx"

    @property
    def export_record(self) -> Path:
        return self.model_dir / "export.json"

    def bins_dir(self, split: str) -> Path:
        return self.root / "bins" / split

    def info_path(self, split: str) -> Path:
        return self.root / "bins" / f"{split}.info"

    def skipped_path(self, split: str) -> Path:
        """The images `preprocess --skip-bad-images` left out of a split (absent: none)."""
        return self.root / "bins" / f"{split}.skipped.json"

    def dumps_dir(self, backend: str, split: str) -> Path:
        return self.root / "dumps" / backend / split

    def eval_path(self, backend: str) -> Path:
        return self.root / "eval" / f"{backend}.json"

    def perf_path(self, backend: str) -> Path:
        return self.root / "perf" / f"{backend}.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"
