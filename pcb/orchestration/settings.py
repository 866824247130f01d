"""Pipeline settings: invoke.yaml's `pcb` section, validated, with task options on top."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from ..constants import DEFAULT_BATCH_SIZES, TORCH_BACKENDS
from ..errors import PcbError, did_you_mean
from ..measure import DEFAULT_MIN_DURATION_S, DEFAULT_MIN_QUERIES, DEFAULT_REPEATS, PERF_TIMERS

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
    # The in-process backends' timer (pcb/measure/): LoadGen under its run rules, or "fixed"
    # (perf_iterations batches); ais_bench and trtexec time themselves.
    perf_timer: str = PERF_TIMERS[0]
    perf_min_duration: float = DEFAULT_MIN_DURATION_S
    perf_min_queries: int = DEFAULT_MIN_QUERIES
    perf_repeats: int = DEFAULT_REPEATS
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
    # AP with tied distances ranked one by one ("ranked") or grouped as sklearn does ("grouped").
    ap_ties: str = "ranked"
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
    # Also the PyTorch platform (torch_backend): infer, evaluate, parity and perf with it.
    torch: str = ""
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

    def for_demo(self, run: str | None = None) -> Settings:
        """Point data at the generated demo set; its run folder is results/demo, or
        results/<run> when a run is named on the command line (--demo --run dock)."""
        return replace(
            self, demo=True, dataset=DEMO_DATASET, checkpoint=DEMO_CHECKPOINT, run=run or "demo"
        )


_PATHS = {"data_dir", "dataset", "checkpoint", "results_dir"}
_INT_TUPLES = {"batch_sizes", "static_batch_sizes", "trt_batch_sizes"}
_POSITIVE = {
    "infer_batch_size",
    "perf_iterations",
    "perf_min_queries",
    "perf_repeats",
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
        raise PcbError(f"{_said(key, value)}: expected an integer >= {minimum}")
    return value


# In the readers below `key` is the name the message gives the value: `invoke.yaml: pcb.chip`
# for a setting, `--chip` for a task option (label()).


def label(key: str, flag: str | None = None) -> str:
    """How a message names a value: the flag the user typed, else the invoke.yaml key."""
    return flag if flag else f"invoke.yaml: pcb.{key}"


def _said(name: str, value: Any) -> str:
    """`--chip 310X` for a flag, as typed; `invoke.yaml: pcb.chip = '310X'` for a key."""
    return f"{name} {value}" if name.startswith("--") else f"{name} = {value!r}"


def _checked(parse: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    """A setting read by `parse`, whose PcbError is said with the value's name and value."""

    def read(key: str, value: Any) -> Any:
        try:
            return parse(value)
        except PcbError as error:
            raise PcbError(f"{_said(key, value)}: {error}") from None

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
    raise PcbError(f"{_said(key, value)}: expected true or false")


def _fraction(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 < number <= 1.0:
        raise PcbError(f"{_said(key, value)}: expected a number in (0, 1]")
    return number


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number >= 0.0:
        raise PcbError(f"invoke.yaml: pcb.{key} = {value!r}: expected seconds, a number >= 0")
    return number


def _perf_timer(key: str, value: Any) -> str:
    if value not in PERF_TIMERS:
        raise PcbError(
            f"invoke.yaml: pcb.{key} = {value!r}: expected {' or '.join(PERF_TIMERS)} (LoadGen, "
            "or a fixed number of batches: perf_iterations)"
        )
    return str(value)


def _torch_backend(value: Any) -> str:
    """ "" or false: no torch platform; true: torch (fp32); or one of the torch backends."""
    if value in (None, False, ""):
        return ""
    name = TORCH_BACKENDS[0] if value is True else str(value).strip()
    if name not in TORCH_BACKENDS:
        raise PcbError(f"expected false, true or one of {', '.join(TORCH_BACKENDS)}")
    return name


def _cann_python(key: str, value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if text not in ("", "3.10", "3.11", "3.12"):
        raise PcbError(
            f"{_said(key, value)}: expected 3.10, 3.11 or 3.12 (the Pythons the "
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


def _ap_ties(value: Any) -> str:
    from ..metrics import AP_TIES

    text = str(value).strip()
    if text not in AP_TIES:
        raise PcbError(f"expected one of {', '.join(AP_TIES)}{did_you_mean(text, AP_TIES)}")
    return text


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
    "perf_timer": _perf_timer,
    "perf_min_duration": _seconds,
    "int8": _bool,
    "torch": _checked(_torch_backend),
    "trt": _bool,
    "trt_precision": _checked(_trt_precision),
    "gpus": _checked(_gpus),
    "trt_image": _checked(_trt_image),
    "memory_limit": _checked(_memory_limit),
    "ap_ties": _checked(_ap_ties),
    "engines": _checked(_engines),
}


def _coerce(key: str, value: Any, flag: str | None = None) -> Any:
    name = label(key, flag)
    if key in _PATHS:
        return Path(value)
    if key in _INT_TUPLES:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        items = tuple(_as_int(name, v, 1) for v in value)
        if key == "batch_sizes" and not items:
            raise PcbError(f"{name} is empty: list at least one batch size, e.g. 1,16")
        return items
    if key in _POSITIVE:
        return _as_int(name, value, 1)
    if key in _NON_NEGATIVE:
        return _as_int(name, value, 0)
    if key in _READERS:
        return _READERS[key](name, value)
    if key == "executor" and value not in EXECUTORS:
        raise PcbError(
            f"{_said(name, value)}: expected one of {', '.join(EXECUTORS)}"
            + did_you_mean(value, EXECUTORS)
        )
    return value


def settings_from_config(
    config: Mapping[str, Any], flags: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build Settings from invoke.yaml's `pcb` mapping plus task options (None = not given).
    `flags`: setting -> the task option that gave it (--chip), which a message about a bad
    value then names instead of the invoke.yaml key."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(config) - known)
    if unknown:
        hints = "; ".join(f"{key}{did_you_mean(key, known)}" for key in unknown)
        raise PcbError(
            f"invoke.yaml: unknown key(s) under pcb: {hints}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    flags = flags or {}
    values = {key: _coerce(key, value) for key, value in config.items()}
    values.update({k: _coerce(k, v, flags.get(k)) for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    if settings.aoe and settings.dynamic:
        raise PcbError("pcb.aoe and pcb.dynamic: AOE tunes static models only; choose one")
    # invoke.yaml's run (market) is for real data; a run named on the command line is kept.
    return settings.for_demo(overrides.get("run")) if settings.demo else settings


def project_config(root: Path) -> dict[str, Any]:
    """The `pcb` section of `root`/invoke.yaml as Invoke reads it; {} without the file or
    Invoke (the Settings defaults are the same values)."""
    try:
        from invoke.vendor import yaml  # invoke's own YAML reader: no extra dependency

        loaded = yaml.safe_load((Path(root) / "invoke.yaml").read_text(encoding="utf-8"))
    except (ImportError, OSError):
        return {}
    return dict((loaded or {}).get("pcb", {}))
