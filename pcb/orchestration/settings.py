"""Pipeline settings: invoke.yaml's `pcb` section, validated, with task options on top."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from ..constants import DEFAULT_BATCH_SIZES
from ..errors import PcbError

DEMO_DIR = Path("data/demo")
DEMO_DATASET = DEMO_DIR / "Market-1501-v15.09.15"
DEMO_CHECKPOINT = DEMO_DIR / "PCB_demo.pt"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    dataset: Path = Path("data/Market-1501-v15.09.15")
    checkpoint: Path = Path("data/PCB_3_7.pt")
    results_dir: Path = Path("results")
    run: str = "market"
    demo: bool = False
    demo_seed: int = 0
    demo_identities: int = 24
    backend: str = "onnxruntime"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    static_batch_sizes: tuple[int, ...] = ()
    infer_batch_size: int = 16
    threads: int = 0
    workers: int = 0
    perf_warmup: int = 1
    perf_iterations: int = 5
    executor: str = "docker"
    # Image builds (see build_inputs.py): "auto" = the pinned default base if it can be had,
    # else the Debian base `invoke base-image` makes without a registry; "offline" = that base.
    base_image: str = "auto"
    # A folder of wheels served to the builds as find-links; "" = $PIP_FIND_LINKS if local.
    wheels: str = ""
    index_url: str = ""
    # A CA bundle pip needs during builds; "" = $PIP_CERT if set. Never left in an image.
    ca_bundle: str = ""
    quiet: bool = False
    # Ascend (docs/ascend.md): "" = no NPU stages; a chip (310, 310P3, ...) or "auto" adds
    # convert, ais_bench inference, parity and ais_bench throughput to `invoke full`.
    chip: str = ""
    devices: tuple[int, ...] = (0,)
    aoe: bool = False
    dynamic: bool = False
    npu_loop: int = 100
    npu_warmup: int = 5
    # The cann image's base (docs/ascend.md, supported images): the published ascendai/cann
    # image of this CANN version for the chip's series; or cann_image names any toolkit image,
    # whose Python cann_python gives when its tag does not end in -py3.N.
    cann_version: str = "8.5.2"
    cann_image: str = ""
    cann_python: str = ""
    parity_threshold: float = 0.99
    # Also the CPU INT8 platform: quantize, infer, evaluate, parity and perf at int8.
    int8: bool = False
    # TensorRT (docs/tensorrt.md): `invoke trt`, or `invoke full --trt` for the whole pipeline.
    trt: bool = False
    trt_precision: str = "fp16"
    trt_batch_sizes: tuple[int, ...] = ()  # () = batch_sizes
    trt_calib_images: int = 512
    gpus: str = "all"  # GPUs the TensorRT containers get: all, or ids such as 0 or 0,1
    # The tensorrt image's base, a key of pcb/tensorrt/image_matrix.py: "10.0" or "8.6".
    trt_image: str = "10.0"
    # Memory a stage container may use (swap included): "auto" = the host's memory less a
    # tenth, a size such as 16g, or 0 / "none" for no limit (limits.py says why).
    memory_limit: str = "auto"
    # The Docker engine of each image (export, runtime, cann, tensorrt), as (image, endpoint)
    # pairs; none listed = this host's engine for all (endpoints.py, docs/hosts.md).
    engines: tuple[tuple[str, str], ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.results_dir / self.run

    def for_demo(self) -> Settings:
        """Point data at the generated demo set; its run folder is results/demo."""
        return replace(
            self, demo=True, dataset=DEMO_DATASET, checkpoint=DEMO_CHECKPOINT, run="demo"
        )


_PATHS = {"data_dir", "dataset", "checkpoint", "results_dir"}
_INT_TUPLES = {"batch_sizes", "static_batch_sizes", "trt_batch_sizes"}
_POSITIVE = {
    "infer_batch_size",
    "perf_iterations",
    "demo_identities",
    "npu_loop",
    "trt_calib_images",
}
_NON_NEGATIVE = {"threads", "workers", "perf_warmup", "npu_warmup"}
EXECUTORS = ("local", "docker")


def _as_int(key: str, value: Any, minimum: int) -> int:
    # Task options arrive as strings; invoke.yaml values as YAML scalars.
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PcbError(f"invoke.yaml: pcb.{key} = {value!r}: expected an integer >= {minimum}")
    return value


def _checked(parse: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    """A setting read by `parse`, whose PcbError is said as invoke.yaml's key and value."""

    def read(key: str, value: Any) -> Any:
        try:
            return parse(value)
        except PcbError as error:
            raise PcbError(f"invoke.yaml: pcb.{key} = {value!r}: {error}") from None

    return read


def _chip(value: Any) -> str:
    from ..ascend.chips import normalize_chip

    return "" if value is None or str(value).strip() == "" else normalize_chip(str(value))


def _devices(value: Any) -> tuple[int, ...]:
    from ..ascend.chips import parse_devices

    return parse_devices(value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise PcbError(f"invoke.yaml: pcb.{key} = {value!r}: expected true or false")


def _fraction(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 < number <= 1.0:
        raise PcbError(f"invoke.yaml: pcb.{key} = {value!r}: expected a number in (0, 1]")
    return number


def _cann_python(key: str, value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if text not in ("", "3.10", "3.11", "3.12"):
        raise PcbError(
            f"invoke.yaml: pcb.{key} = {value!r}: expected 3.10, 3.11 or 3.12 (the Pythons the "
            "cann image has locks for), or empty to read it from the image's tag"
        )
    return text


def _trt_precision(value: Any) -> str:
    from ..tensorrt.trtexec import validate_precision

    return validate_precision(str(value))


def _gpus(value: Any) -> str:
    from .gpus import parse_gpus

    selection = parse_gpus(value)
    return "all" if selection == -1 else ",".join(selection)


def _trt_image(value: Any) -> str:
    from ..tensorrt.image_matrix import tensorrt_image

    return tensorrt_image(str(value)).key


def _memory_limit(value: Any) -> str:
    from .limits import parse_memory_limit

    parse_memory_limit(value, total=1 << 40)  # the host's size does not matter here
    return str(value).strip().lower()


def _engines(value: Any) -> tuple[tuple[str, str], ...]:
    from .endpoints import parse_engines

    return parse_engines(value)


# Settings with a reader of their own: key -> read(key, value).
_READERS: dict[str, Callable[[str, Any], Any]] = {
    "chip": _checked(_chip),
    "cann_python": _cann_python,
    "cann_version": lambda key, value: str(value).strip(),
    "cann_image": lambda key, value: str(value or "").strip(),
    "devices": _checked(_devices),
    "aoe": _bool,
    "dynamic": _bool,
    "parity_threshold": _fraction,
    "int8": _bool,
    "trt": _bool,
    "trt_precision": _checked(_trt_precision),
    "gpus": _checked(_gpus),
    "trt_image": _checked(_trt_image),
    "memory_limit": _checked(_memory_limit),
    "engines": _checked(_engines),
}


def _coerce(key: str, value: Any) -> Any:
    if key in _PATHS:
        return Path(value)
    if key in _INT_TUPLES:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        items = tuple(_as_int(key, v, 1) for v in value)
        if key == "batch_sizes" and not items:
            raise PcbError("invoke.yaml: pcb.batch_sizes is empty: list at least one, e.g. [1, 16]")
        return items
    if key in _POSITIVE:
        return _as_int(key, value, 1)
    if key in _NON_NEGATIVE:
        return _as_int(key, value, 0)
    if key in _READERS:
        return _READERS[key](key, value)
    if key == "executor" and value not in EXECUTORS:
        raise PcbError(f"invoke.yaml: pcb.executor = {value!r}: expected one of {EXECUTORS}")
    return value


def settings_from_config(config: Mapping[str, Any], **overrides: Any) -> Settings:
    """Build Settings from invoke.yaml's `pcb` mapping plus task options (None = not given)."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise PcbError(
            f"invoke.yaml: unknown key(s) under pcb: {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    values = {key: _coerce(key, value) for key, value in config.items()}
    values.update({k: _coerce(k, v) for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    if settings.aoe and settings.dynamic:
        raise PcbError("pcb.aoe and pcb.dynamic: AOE tunes static models only; choose one")
    return settings.for_demo() if settings.demo else settings


def project_config(root: Path) -> dict[str, Any]:
    """The `pcb` section of `root`/invoke.yaml as Invoke reads it; {} without the file or
    Invoke (the Settings defaults are the same values)."""
    try:
        from invoke.vendor import yaml  # invoke's own YAML reader: no extra dependency

        loaded = yaml.safe_load((Path(root) / "invoke.yaml").read_text(encoding="utf-8"))
    except (ImportError, OSError):
        return {}
    return dict((loaded or {}).get("pcb", {}))
