"""Saved TensorRT engines and when one may be reused.

Building an engine takes minutes (tactic timing at every layer); timing one takes seconds. An
engine is reused only when everything that decides its contents is unchanged: the ONNX (md5),
the precision, the optimisation profile (min/opt/max batch), the TensorRT version that built it,
the GPU model (engines are not portable across GPUs), and for int8 the calibration cache. These
fields make an `EngineSpec`; its `key()` is stored in a record beside the engine:

    <run>/engines/tensorrt/<precision>/pcb_bs<N>.engine   the serialized engine (trtexec's)
    <run>/engines/tensorrt/<precision>/pcb_bs<N>.json     {"key": ..., "spec": {...}, ...}
    <run>/engines/tensorrt/int8/calibration.cache          int8 scales (+ calibration.json)

An engine without a record, or with a record of another key, is rebuilt. The engine is moved
into place before its record is written, so an interrupted build never leaves a record that
vouches for a partial or older engine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import PcbError
from ..fileio import atomic_write_json, read_json
from ..layout import RunLayout
from ..provenance import utc_now
from .trtexec import shape, validate_precision

SCHEMA = 1
UNKNOWN = "unknown"
CALIBRATION_CACHE = "calibration.cache"
CALIBRATION_RECORD = "calibration.json"
# int8 calibration: how many preprocessed images, in batches of how many.
CALIBRATION_IMAGES = 512
CALIBRATION_BATCH = 16


def engines_root(layout: RunLayout) -> Path:
    return layout.root / "engines" / "tensorrt"


def engine_dir(layout: RunLayout, precision: str) -> Path:
    return engines_root(layout) / validate_precision(precision)


def engine_path(layout: RunLayout, precision: str, batch: int) -> Path:
    return engine_dir(layout, precision) / f"pcb_bs{batch}.engine"


def record_path(engine: Path) -> Path:
    return Path(engine).with_suffix(".json")


def build_log_path(engine: Path) -> Path:
    return Path(engine).with_suffix(".build.log")


def calibration_cache_path(layout: RunLayout) -> Path:
    return engine_dir(layout, "int8") / CALIBRATION_CACHE


def calibration_record_path(layout: RunLayout) -> Path:
    return engine_dir(layout, "int8") / CALIBRATION_RECORD


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides what an engine holds."""

    onnx_md5: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    tensorrt_version: str
    gpu: str
    calib_md5: str = ""  # int8 only: the calibration cache the scales came from

    def __post_init__(self) -> None:
        validate_precision(self.precision)
        if not 0 < self.min_batch <= self.opt_batch <= self.max_batch:
            raise PcbError(
                f"engine profile needs 0 < min <= opt <= max, got {self.min_batch}/"
                f"{self.opt_batch}/{self.max_batch}"
            )
        if self.precision == "int8" and not self.calib_md5:
            raise PcbError("an int8 engine spec needs the md5 of its calibration cache")

    def shapes(self) -> dict[str, str]:
        return {
            "min": shape(self.min_batch),
            "opt": shape(self.opt_batch),
            "max": shape(self.max_batch),
        }

    def key(self) -> str:
        return engine_key(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_key(spec: EngineSpec) -> str:
    """sha256 (first 16 hex digits) of the spec as canonical JSON: equal specs, equal keys;
    any changed field, another key. `schema` changes when the fields' meaning does."""
    payload = json.dumps({"schema": SCHEMA, **asdict(spec)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CacheDecision:
    reuse: bool
    reason: str  # why not (or "cached"), for the log and the record


_FIELD_NAMES = {
    "onnx_md5": "the ONNX model changed",
    "precision": "the precision changed",
    "min_batch": "the profile's min batch changed",
    "opt_batch": "the profile's opt batch changed",
    "max_batch": "the profile's max batch changed",
    "tensorrt_version": "another TensorRT version",
    "gpu": "another GPU",
    "calib_md5": "the calibration cache changed",
}


def read_record(engine: Path) -> dict[str, Any] | None:
    path = record_path(engine)
    if not path.is_file():
        return None
    try:
        payload = read_json(path)
    except (OSError, ValueError):
        return None  # unreadable: proves nothing, so the engine is rebuilt
    return payload if isinstance(payload, dict) else None


def decide(engine: Path, spec: EngineSpec) -> CacheDecision:
    """Reuse `engine` for `spec`, or say why not."""
    if spec.tensorrt_version in ("", UNKNOWN):
        return CacheDecision(False, "the TensorRT version is unknown, so no engine is trusted")
    if not Path(engine).is_file():
        return CacheDecision(False, "no saved engine yet")
    record = read_record(engine)
    if record is None:
        return CacheDecision(False, "the saved engine has no readable record beside it")
    if record.get("key") == spec.key():
        return CacheDecision(True, "cached")
    old = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    changed = [
        f"{_FIELD_NAMES[f.name]} ({old.get(f.name)!r} -> {getattr(spec, f.name)!r})"
        for f in fields(EngineSpec)
        if old.get(f.name) != getattr(spec, f.name)
    ]
    return CacheDecision(False, "; ".join(changed) or "the record's key differs")


def temp_engine_path(engine: Path) -> Path:
    """Where trtexec saves a new engine before it is moved over the old one."""
    engine = Path(engine)
    return engine.parent / f".{engine.name}.{os.getpid()}.tmp"


def commit_engine(temp: Path, engine: Path, spec: EngineSpec, extra: dict[str, Any]) -> None:
    """Move a freshly built engine into place, then write the record that vouches for it."""
    temp, engine = Path(temp), Path(engine)
    if not temp.is_file() or temp.stat().st_size == 0:
        raise PcbError(
            f"trtexec reported success but saved no engine at {temp}: is the folder "
            f"{temp.parent} writable, and does this trtexec support --saveEngine?"
        )
    # The old record goes first: between the two steps no record vouches for the new file.
    record_path(engine).unlink(missing_ok=True)
    os.replace(temp, engine)
    atomic_write_json(
        record_path(engine),
        {"key": spec.key(), "spec": spec.to_dict(), "built": utc_now(), **extra},
    )


def discard(engine: Path) -> None:
    """Remove an engine and its record (a stale or wrong one)."""
    record_path(engine).unlink(missing_ok=True)
    Path(engine).unlink(missing_ok=True)
