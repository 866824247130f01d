"""The Ascend stages as StageCalls: convert (atc / aoe), ais_bench inference and throughput in
the cann image, evaluate and parity of the NPU's dumps in the runtime image, importing results
made by hand; and `invoke full --chip ...`'s order of them all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..ascend.cann_images import python_of, select_image
from ..ascend.chips import AUTO, backend_key
from ..errors import PcbError
from .settings import Settings
from .stage import StageCall

ASCEND_STAGES = ("convert", "parity", "import-results")
REFERENCE_BACKEND = "onnxruntime"


def _join(values: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(v) for v in values)


def _quiet(settings: Settings) -> tuple[str, ...]:
    return ("--quiet",) if settings.quiet else ()


def _variant(aoe: bool, dynamic: bool) -> tuple[str, ...]:
    return (("--aoe",) if aoe else ()) + (("--dynamic",) if dynamic else ())


def cann_base(settings: Settings) -> tuple[str, str]:
    """The cann image's base and its Python: pcb.cann_image as given, else the published image
    of pcb.cann_version for the chip's series (a 310P when no chip is chosen)."""
    if settings.cann_image:
        python = settings.cann_python or python_of(settings.cann_image)
        if not python:
            raise PcbError(
                f"pcb.cann_image = {settings.cann_image!r} does not say its Python (no -py3.N "
                "at the end of its tag): set pcb.cann_python to the image's python3 version"
            )
        return settings.cann_image, python
    chip = settings.chip if settings.chip and settings.chip != AUTO else "310P3"
    image = select_image(chip, settings.cann_version, settings.cann_python or None)
    return image.reference(), image.python


def require_chip(settings: Settings) -> str:
    if not settings.chip:
        raise PcbError("no Ascend chip chosen: pass --chip 310P3 (or 310, 310B1, ..., auto)")
    if settings.chip == AUTO:
        raise PcbError(
            "--chip auto is read from `npu-smi info` before the stages are planned "
            "(pcb.orchestration.plan.resolve_auto_chip); pass the chip by name, e.g. --chip 310P3"
        )
    return settings.chip


def convert_batch_sizes(settings: Settings) -> list[int]:
    """Every batch size a later stage loads a model for: the perf ones and the infer one."""
    return sorted({*settings.batch_sizes, settings.infer_batch_size})


def convert_call(settings: Settings, batch_sizes: list[int] | None = None) -> StageCall:
    """atc (and AOE) for `batch_sizes`, by default every batch size the pipeline loads."""
    chip = require_chip(settings)
    args: tuple = (
        "--run",
        settings.run_dir,
        "--chip",
        chip,
        "--batch-sizes",
        _join(batch_sizes or convert_batch_sizes(settings)),
        *_variant(settings.aoe, settings.dynamic),
    )
    # atc needs no NPU; AOE tunes by running the operators on one.
    devices: tuple[int, ...] = ()
    if settings.aoe:
        args += ("--device", str(settings.devices[0]))
        devices = (settings.devices[0],)
    return StageCall("convert", "cann", (*args, *_quiet(settings)), npu_devices=devices)


def ais_infer_call(settings: Settings, aoe: bool = False) -> StageCall:
    device = settings.devices[0]
    return StageCall(
        "infer",
        "cann",
        (
            "--run",
            settings.run_dir,
            "--backend",
            "ais_bench",
            "--chip",
            require_chip(settings),
            "--batch-size",
            str(settings.infer_batch_size),
            "--device",
            str(device),
            *_variant(aoe, settings.dynamic),
            *_quiet(settings),
        ),
        npu_devices=(device,),
    )


def npu_backend(settings: Settings, aoe: bool = False) -> str:
    return backend_key(require_chip(settings), "ais_bench", aoe, settings.dynamic)


def evaluate_call(settings: Settings, backend: str) -> StageCall:
    return StageCall(
        "evaluate",
        "runtime",
        ("--dataset", settings.dataset, "--run", settings.run_dir, "--backend", backend),
    )


def parity_call(settings: Settings, backend: str) -> StageCall:
    return StageCall(
        "parity",
        "runtime",
        (
            "--run",
            settings.run_dir,
            "--backend",
            backend,
            "--reference",
            REFERENCE_BACKEND,
            "--threshold",
            f"{settings.parity_threshold:g}",
        ),
    )


def ais_perf_call(settings: Settings, aoe: bool = False) -> StageCall:
    return StageCall(
        "perf",
        "cann",
        (
            "--run",
            settings.run_dir,
            "--backend",
            "ais_bench",
            "--chip",
            require_chip(settings),
            "--batch-sizes",
            _join(settings.batch_sizes),
            "--devices",
            _join(settings.devices),
            "--iterations",
            str(settings.npu_loop),
            "--warmup",
            str(settings.npu_warmup),
            *_variant(aoe, settings.dynamic),
            *_quiet(settings),
        ),
        npu_devices=settings.devices,
    )


def import_chip(settings: Settings) -> str:
    """The chip of imported results: the one chosen, else the guide's 310."""
    return settings.chip if settings.chip and settings.chip != AUTO else "310"


def import_results_call(
    settings: Settings,
    source: Path,
    batch_size: int | None = None,
    chips_per_card: int | None = None,
) -> StageCall:
    """The old benchmark tool's results (under data/ or results/, which the container sees)."""
    args: tuple = (
        "--from",
        Path(source),
        "--run",
        settings.run_dir,
        "--chip",
        import_chip(settings),
    )
    if batch_size is not None:
        args += ("--batch-size", str(batch_size))
    if chips_per_card is not None:
        args += ("--chips-per-card", str(chips_per_card))
    return StageCall("import-results", "runtime", args)


def ascend_stage_call(stage: str, settings: Settings) -> StageCall:
    """The Ascend stages that `stage_call` knows by name (import-results needs a folder)."""
    if stage == "convert":
        return convert_call(settings)
    if stage == "parity":
        return parity_call(settings, npu_backend(settings))
    raise ValueError(f"{stage!r} is not an Ascend stage by name: {', '.join(ASCEND_STAGES[:2])}")


def ascend_pipeline(settings: Settings) -> list[StageCall]:
    """`invoke full --chip ...`: [demo-data,] export, preprocess, convert; per model variant
    (plain, then AOE-tuned) ais_bench inference and its evaluation; the onnxruntime reference
    inference and evaluation; parity of each variant against it; ais_bench throughput per
    variant; the report. The NPU inference comes before the CPU one so that a problem with the
    NPU shows in minutes, not after a CPU pass over the whole dataset."""
    from .pipeline import stage_call

    require_chip(settings)
    reference = replace(settings, backend=REFERENCE_BACKEND)
    variants = [False, True] if settings.aoe else [False]
    head = (["demo-data"] if settings.demo else []) + ["export", "preprocess"]
    calls = [stage_call(stage, settings) for stage in head]
    calls.append(convert_call(settings))
    for aoe in variants:
        calls += [
            ais_infer_call(settings, aoe),
            evaluate_call(settings, npu_backend(settings, aoe)),
        ]
    calls += [stage_call("infer", reference), stage_call("evaluate", reference)]
    calls += [parity_call(settings, npu_backend(settings, aoe)) for aoe in variants]
    calls += [ais_perf_call(settings, aoe) for aoe in variants]
    calls.append(stage_call("report", settings))
    return calls
