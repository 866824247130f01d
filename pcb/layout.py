"""Where things are: what each stage reads and writes inside a run folder (results/<run>/), and
the two split folders of a Market-1501 dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .constants import SPLIT_FOLDERS
from .errors import PcbError

MARKET_FOLDER = "Market-1501-v15.09.15"
INT8_SUFFIX = "_int8.onnx"

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


def int8_model_path(model_path: Path) -> Path:
    """pcb.onnx -> pcb_int8.onnx beside it; a quantised model's own path is returned as is."""
    model_path = Path(model_path)
    if model_path.name.endswith(INT8_SUFFIX):
        return model_path
    return model_path.with_name(model_path.stem + INT8_SUFFIX)


_LAYOUT_HINT = (
    f"expected the {MARKET_FOLDER} folder (holding query/ and bounding_box_test/) or a folder "
    f"holding exactly one such folder; see data/README.md for where to download Market-1501, "
    f"or run `invoke demo-data` for a small synthetic one"
)


def _is_market_root(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in SPLIT_FOLDERS.values())


def find_market_root(root: Path) -> Path:
    """The folder directly holding query/ and bounding_box_test/: `root` itself or its one child."""
    root = Path(root)
    if not root.exists():
        raise PcbError(f"dataset folder {root} does not exist: {_LAYOUT_HINT}")
    if not root.is_dir():
        raise PcbError(
            f"dataset path {root} is a file, not a folder: unpack the archive and pass the "
            f"folder; {_LAYOUT_HINT}"
        )
    if _is_market_root(root):
        return root
    candidates = sorted(
        child for child in root.iterdir() if child.is_dir() and _is_market_root(child)
    )
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(str(c) for c in candidates)
        raise PcbError(
            f"dataset folder {root} holds several Market-1501 folders ({names}): "
            f"pass the one to use with --dataset"
        )
    # Name what is missing where the user evidently meant a Market folder.
    for folder in [root, *sorted(c for c in root.iterdir() if c.is_dir())]:
        present = [name for name in SPLIT_FOLDERS.values() if (folder / name).is_dir()]
        if present:
            missing = [folder / name for name in SPLIT_FOLDERS.values() if name not in present]
            listed = ", ".join(str(m) for m in missing)
            raise PcbError(
                f"dataset folder {folder} has {', '.join(present)}/ but lacks {listed}: "
                f"the archive may be incompletely unpacked; {_LAYOUT_HINT}"
            )
    raise PcbError(f"dataset folder {root} holds no query/ and bounding_box_test/: {_LAYOUT_HINT}")
