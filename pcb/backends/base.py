"""The one small interface every in-process inference backend implements."""

from __future__ import annotations

import abc
import os
from pathlib import Path

import numpy as np


class Backend(abc.ABC):
    """Load a model once, then turn N x 3 x 384 x 128 float32 batches into features.

    Kept deliberately small (MLCommons style): tools that run whole folders themselves
    (ais_bench, trtexec) will sit beside this, not squeeze into it.
    """

    name: str = ""

    @abc.abstractmethod
    def load(self, model_path: Path, batch_size: int | None = None, threads: int = 0) -> None:
        """Prepare `model_path`; `batch_size` None means any batch; `threads` 0 = all cores."""

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x 384 x 128 float32 -> N x 2048 x 6 x 1 float32 features."""

    @abc.abstractmethod
    def version(self) -> str:
        """Version of the runtime underneath, recorded beside every measurement."""


def resolve_threads(threads: int) -> int:
    """0 means every core this process may use (the affinity mask, not the host's count)."""
    if threads > 0:
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
