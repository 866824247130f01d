"""In-process inference: preprocessed bins -> per-image feature dumps, and throughput per batch."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tabulate import tabulate

from .backends import Backend, create_backend
from .backends.base import resolve_threads
from .constants import (
    DEFAULT_BATCH_SIZES,
    FEATURE_BYTES,
    INPUT_BYTES,
    INPUT_SHAPE,
    SPLITS,
)
from .errors import PcbError
from .fileio import atomic_write_bytes, atomic_write_json, read_record
from .layout import RunLayout
from .perf import (
    LatencyStats,
    PerfRecord,
    images_per_second,
    merge_perf_records,
    read_perf_records,
    write_perf_records,
)
from .progress import progress, track
from .provenance import host_name, stamp, utc_now
from .record.digest import bytes_digest, cached_md5, digest_store
from .record.digest_records import (
    SplitDigests,
    bins_record_path,
    check_files,
    describe_redo,
    dumps_record_path,
)

PERF_SEED = 0


# ---------------------------------------------------------------- inputs


def read_stems(info_path: Path) -> list[str]:
    """Stems listed in a `.info` file, in file order.

    Lines are `<index> <relative-bin-path> <w> <h>`; only the stem matters here, since the
    bin itself always lives at layout.bins_dir(split)/<stem>.bin.
    """
    info_path = Path(info_path)
    if not info_path.is_file():
        raise PcbError(f"image list not found: {info_path}; run `pcb preprocess` first")
    stems = []
    for number, line in enumerate(info_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 4:
            raise PcbError(
                f"{info_path}:{number}: expected `<index> <bin-path> <w> <h>`, got {line!r}; "
                "re-run `pcb preprocess`"
            )
        # The path sits between the index and the two sizes; join in case it held spaces.
        stems.append(Path(" ".join(parts[1:-2])).stem)
    return stems


def require_model(layout: RunLayout) -> Path:
    if not layout.onnx_path.is_file():
        raise PcbError(f"ONNX model not found: {layout.onnx_path}; run `pcb export` first")
    return layout.onnx_path


def backend_precision(engine: Backend) -> str:
    return str(getattr(engine, "precision", "fp32"))


def backend_model(engine: Backend, layout: RunLayout, quiet: bool = False) -> Path:
    """The model file `engine` runs for this run: pcb.onnx, or its int8 copy (made if stale).

    Quantising here, not only in a stage of its own, lets `infer` / `perf` with the int8
    backend work on any run that has been exported and preprocessed; it is a no-op when
    quantize.json says the int8 model is current.
    """
    model_path = require_model(layout)
    if backend_precision(engine) == "int8":
        from .quantize import ensure_quantized

        return ensure_quantized(layout, quiet=quiet)
    return model_path


def _check_bin_size(path: Path) -> None:
    if not path.is_file():
        raise PcbError(f"preprocessed image not found: {path}; re-run `pcb preprocess`")
    size = path.stat().st_size
    if size != INPUT_BYTES:
        raise PcbError(
            f"{path} holds {size} bytes, expected {INPUT_BYTES} (3 x 384 x 128 float32); "
            "re-run `pcb preprocess`"
        )


def load_bin(path: Path) -> np.ndarray:
    """One preprocessed image, 3 x 384 x 128 float32; any other size is a broken file."""
    _check_bin_size(path)
    return np.fromfile(path, dtype=np.float32).reshape(INPUT_SHAPE)


# ---------------------------------------------------------------- dumps


def dump_path(layout: RunLayout, backend: str, split: str, stem: str) -> Path:
    # `_0` = output index 0, the name ais_bench gives, so evaluate reads every backend alike.
    return layout.dumps_dir(backend, split) / f"{stem}_0.bin"


def infer_record_path(layout: RunLayout, backend: str, split: str) -> Path:
    return layout.dumps_dir(backend, split).parent / f"{split}.json"


def _dump_complete(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == FEATURE_BYTES


def bin_digests(
    layout: RunLayout, split: str, stems: Sequence[str], check_size: bool = True
) -> dict[str, str]:
    """Each bin's digest by stem, checked against what preprocess recorded writing.

    A bin that no longer matches was changed after preprocessing: features made from it
    would be silently wrong, so inference refuses and names it. Bins without any record
    (made by an older pcb) are taken as they are. `check_size=False` leaves the size to the
    tool (ais_bench explains a size that does not fit the model better than a count could).
    """
    store = digest_store(layout.root)
    recorded = SplitDigests.load(bins_record_path(layout, split))
    bins_dir = layout.bins_dir(split)
    digests: dict[str, str] = {}
    changed: list[str] = []
    for stem in stems:
        path = bins_dir / f"{stem}.bin"
        if check_size:
            _check_bin_size(path)
        digests[stem] = store.digest(path)
        entry = recorded.files.get(path.name)
        if recorded.files and (entry is None or entry[0] != digests[stem]):
            expected = entry[0] if entry else "none recorded"
            changed.append(f"{path.name} (expected {expected}, found {digests[stem]})")
    if changed:
        more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
        shown = "; ".join(changed[:5]) + more
        count = "1 bin in {} does" if len(changed) == 1 else f"{len(changed)} bins in {{}} do"
        raise PcbError(
            f"{count.format(bins_dir)} not match the digest preprocess recorded "
            f"in {recorded.path.name}: {shown}. They changed after preprocessing; run "
            "`pcb preprocess` again (it redoes them), then infer"
        )
    return digests


def pending_dumps(
    layout: RunLayout,
    backend: str,
    split: str,
    stems: Sequence[str],
    model_md5: str,
    quiet: bool = False,
) -> list[str]:
    """The stems whose dump must be made (again).

    A dump is kept only while it has the digest recorded when it was written, by this model,
    from a bin with the digest that bin has now. The split's digest record is rewritten
    without the others before any is remade, and the reasons are printed.
    """
    store = digest_store(layout.root)
    record = SplitDigests.load(dumps_record_path(layout, backend, split))
    if record.model != model_md5:
        record.files.clear()
        record.model = model_md5
    bins = bin_digests(layout, split, stems)
    names = {f"{stem}_0.bin": stem for stem in stems}
    sources = {name: bins[stem] for name, stem in names.items()}
    reuse = check_files(record, list(names), sources, FEATURE_BYTES, store)
    for line in describe_redo(split, reuse, "dump", "bin"):
        print(line)
    record.keep_only(set(reuse.kept))
    record.write()
    store.save()
    return [names[name] for name in reuse.pending]


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class DumpSource:
    """What a backend's dumps come from, for the one inference loop (`infer_splits`).

    `name`: the folder and records they go under (dumps/<name>/). `identity`: the recorded
    fields that say which model made them (its md5, a TensorRT engine's key): a split whose
    record names another is redone from scratch, and `changed` says so. `fields`: what every
    split's record adds. `open`: makes and loads the backend, called once, when the first dump
    is to be made. `version`: the runtime's version for the record, given the backend once it
    is open (None before).
    """

    name: str
    model_md5: str
    identity: Mapping[str, str]
    changed: str
    fields: Mapping[str, Any]
    open: Callable[[], Backend]
    version: Callable[[Backend | None], str]


def infer_splits(
    layout: RunLayout,
    source: DumpSource,
    stems_by_split: Mapping[str, Sequence[str]],
    batch_size: int,
    quiet: bool = False,
) -> dict[str, int]:
    """Every split's pending bins through the backend into `<run>/dumps/<name>/<split>/`;
    returns images per split. The loop every in-process backend goes through (onnxruntime,
    its int8 model, TensorRT). Resumable: a dump is kept while it has the digest recorded
    when it was written, from the bin there now, by the same model (pending_dumps)."""
    backend: Backend | None = None
    counts: dict[str, int] = {}
    for split, stems in stems_by_split.items():
        record_path = infer_record_path(layout, source.name, split)
        # An unreadable record proves nothing: the dumps are then judged by their digests.
        previous = read_record(record_path)
        stale = any(previous.get(key, value) != value for key, value in source.identity.items())
        if stale:
            # Delete rather than overwrite: were this run interrupted, no old dump could pass
            # for one of the new model's under a record that now names the new model.
            if not quiet:
                print(f"{split}: {source.changed}")
            for old in layout.dumps_dir(source.name, split).glob("*.bin"):
                old.unlink()
        pending = pending_dumps(layout, source.name, split, stems, source.model_md5, quiet)
        counts[split] = len(stems)
        if not pending and previous.get("complete") and not stale:
            if not quiet:  # finished earlier; keep that run's timing
                print(f"{split}: all {len(stems)} dumps already complete")
            continue
        if pending and backend is None:
            backend = source.open()
        record: dict[str, Any] = {
            "backend": source.name,
            "backend_version": source.version(backend),
            "split": split,
            **source.fields,
            "count": len(stems),
            "inferred": len(pending),
            "reused": len(stems) - len(pending),
            "complete": False,
            "started": utc_now(),
            "host": host_name(),
        }
        infer_recorded(backend, layout, source.name, split, pending, batch_size, quiet, record)
        if not quiet:
            print(f"{split}: {len(stems)} dumps in {layout.dumps_dir(source.name, split)}")
    return counts


def run_inference(
    layout: RunLayout,
    backend: str = "onnxruntime",
    batch_size: int = 16,
    threads: int = 0,
    quiet: bool = False,
) -> dict[str, int]:
    """Every split's bins -> `<run>/dumps/<backend>/<split>/<stem>_0.bin` with the in-process
    backend called `backend`; returns images per split. The dumps of a model that changed are
    all made again."""
    if batch_size <= 0:
        raise PcbError(f"batch size must be positive, got {batch_size}")
    # Check every input before any work, so a missing split fails in seconds, not after query.
    stems_by_split = {split: read_stems(layout.info_path(split)) for split in SPLITS}
    require_model(layout)
    for split, stems in stems_by_split.items():
        bin_digests(layout, split, stems)  # a bin changed since preprocessing: refused now
    engine = create_backend(backend)
    # The md5 of the file the backend runs (the int8 copy for the int8 backend), so dumps are
    # redone when that model changes.
    model_path = backend_model(engine, layout, quiet)
    model_md5 = cached_md5(model_path, layout.root)

    def open_engine() -> Backend:
        engine.load(model_path, None, threads)
        return engine

    source = DumpSource(
        name=backend,
        model_md5=model_md5,
        identity={"model_md5": model_md5},
        changed="model changed since the last run, recomputing every dump",
        fields={
            "model": str(model_path),
            "model_md5": model_md5,
            "batch_size": batch_size,
            "threads": resolve_threads(threads),
        },
        open=open_engine,
        version=lambda loaded: engine.version(),
    )
    return infer_splits(layout, source, stems_by_split, batch_size, quiet)


def infer_recorded(
    engine: Backend | None,
    layout: RunLayout,
    backend: str,
    split: str,
    pending: Sequence[str],
    batch_size: int,
    quiet: bool,
    record: dict[str, Any],
) -> None:
    """Infer `pending` into the split's dumps, bracketed by its record: written incomplete
    before the first dump (an interrupted run still says which model made them), then
    complete with the timing."""
    record_path = infer_record_path(layout, backend, split)
    atomic_write_json(record_path, record)
    digests = SplitDigests.load(dumps_record_path(layout, backend, split))
    if digests.model != record.get("model_md5"):
        digests.files.clear()
        digests.model = record.get("model_md5")
    start = time.perf_counter()
    if pending:
        assert engine is not None, "a pending dump needs the backend open"
        _infer_split(engine, layout, backend, split, pending, batch_size, quiet, digests)
    wall = time.perf_counter() - start
    digests.write()
    digest_store(layout.root).save()
    record.update(
        complete=True,
        finished=utc_now(),
        wall_s=round(wall, 3),
        # End to end: file reads, inference and atomic writes, as the guide's [e2e] line.
        images_per_s=round(len(pending) / wall, 3) if pending and wall > 0 else None,
    )
    atomic_write_json(record_path, record)


def _read_batch(bins_dir: Path, stems: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The stems' bins as one batch, with the digest of the bytes actually read: the dump's
    record names what it was made from."""
    inputs = [load_bin(bins_dir / f"{stem}.bin") for stem in stems]
    return np.stack(inputs), [bytes_digest(memoryview(array).cast("B")) for array in inputs]


def _infer_split(
    engine: Backend,
    layout: RunLayout,
    backend: str,
    split: str,
    stems: Sequence[str],
    batch_size: int,
    quiet: bool,
    digests: SplitDigests,
) -> None:
    """Write each dump and record its digest with the digest of the bin it came from."""
    bins_dir = layout.bins_dir(split)
    store = digest_store(layout.root)
    chunks = _batches(stems, batch_size)
    with (
        progress(len(stems), f"infer {backend} {split}", "img", quiet or not stems) as bar,
        # The next batch is read and digested while this one is inferred: file reads and
        # hashing release the GIL, so they overlap inference instead of adding to the stage.
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcb-read-bins") as reader,
    ):
        upcoming = reader.submit(_read_batch, bins_dir, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            assert upcoming is not None
            batch, sources = upcoming.result()
            if index + 1 < len(chunks):
                upcoming = reader.submit(_read_batch, bins_dir, chunks[index + 1])
            features = engine.run(batch)
            if features.shape[0] != len(chunk) or features[0].nbytes != FEATURE_BYTES:
                raise PcbError(
                    f"backend {backend} returned features of shape {features.shape} for "
                    f"{len(chunk)} images, expected {len(chunk)} x 2048 x 6 x 1 float32"
                )
            for stem, feature, source in zip(chunk, features, sources):
                data = np.ascontiguousarray(feature, dtype=np.float32).tobytes()
                path = dump_path(layout, backend, split, stem)
                # Synced together before the stage is recorded complete (pcb.fileio).
                atomic_write_bytes(path, data, durable=False)
                digest = bytes_digest(data)
                digests.put(path.name, digest, source)
                store.remember(path, digest)
            if digests.flush():
                store.save()
            bar.update(len(chunk))


# ---------------------------------------------------------------- throughput


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The `model name` of /proc/cpuinfo (x86); None where absent (most aarch64 kernels)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    return None


def cpu_name() -> str:
    try:
        name = parse_cpu_model(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "unknown CPU"


def perf_platform(backend: str) -> str:
    """cpu-onnxruntime-fp32; a backend named <runtime>-int8 gives cpu-<runtime>-int8."""
    if backend.endswith("-int8"):
        return f"cpu-{backend}"
    return f"cpu-{backend}-fp32"


def measure_batch(engine: Backend, batch: np.ndarray, warmup: int, iterations: int) -> LatencyStats:
    """Warm-up runs untimed (allocations, thread pool start), then one sample per batch."""
    for _ in range(warmup):
        engine.run(batch)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        engine.run(batch)
        samples.append((time.perf_counter() - start) * 1000.0)
    return LatencyStats.from_samples(samples)


def perf_table(records: Sequence[PerfRecord]) -> str:
    rows = [
        [
            str(r.batch_size),
            f"{r.images_per_s:.1f}",
            f"{r.latency.mean_ms:.2f}",
            f"{r.latency.median_ms:.2f}",
            f"{r.latency.p99_ms:.2f}",
        ]
        for r in records
    ]
    headers = ["batch", "images/s", "mean ms", "median ms", "p99 ms"]
    return tabulate(
        rows, headers=headers, tablefmt="simple", disable_numparse=True, colalign=("right",) * 5
    )


def reusable_perf(
    path: Path,
    platform_name: str,
    batch_sizes: Sequence[int],
    iterations: int,
    settings: dict[str, Any],
    tool_version: str,
    device: str,
) -> list[PerfRecord] | None:
    """The records in `path` of these batch sizes when they measured exactly this, else None.

    Same platform, every batch size asked for (the file may hold more: records merge by batch
    size), iterations, runtime version, CPU and host, and the `settings` (warmup, threads,
    model md5) in every record's extra. A re-run with nothing changed then keeps the
    measurement instead of spending most of the pipeline's time repeating it; `force` in
    run_perf re-measures.
    """
    if not path.is_file():
        return None
    try:
        stored = read_perf_records(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: measure again and overwrite it
    by_size = {r.batch_size: r for r in stored if r.platform == platform_name}
    if any(size not in by_size for size in batch_sizes):
        return None
    records = [by_size[size] for size in batch_sizes]
    for record in records:
        extra = record.extra
        if (
            record.platform != platform_name
            or record.tool_version != tool_version
            or record.device != device
            or extra.get("host") != host_name()
            or record.iterations != iterations
            or any(extra.get(key) != value for key, value in settings.items())
        ):
            return None
    return records


def run_perf(
    layout: RunLayout,
    backend: str = "onnxruntime",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    warmup: int = 1,
    iterations: int = 5,
    threads: int = 0,
    quiet: bool = False,
    force: bool = False,
) -> list[PerfRecord]:
    """Throughput per batch size on random input; writes `<run>/perf/<backend>.json`.

    When that file already holds a measurement of the same model with the same settings on
    this host and CPU, it is kept and shown (`force` measures again): perf is the one stage
    whose re-run would otherwise cost as much as the first run.
    """
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise PcbError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if warmup < 0 or iterations <= 0:
        raise PcbError(
            f"need warmup >= 0 and iterations >= 1, got warmup={warmup} iterations={iterations}"
        )
    require_model(layout)
    engine = create_backend(backend)
    model_path = backend_model(engine, layout, quiet)
    model_md5 = cached_md5(model_path, layout.root)
    device = cpu_name()
    used_threads = resolve_threads(threads)
    # A backend that knows its platform (torch: cpu-torch-bf16, gpu-torch-fp16) names it.
    platform_name = getattr(engine, "platform_name", lambda: perf_platform(backend))()
    perf_path = layout.perf_path(backend)
    settings: dict[str, Any] = {
        "threads": used_threads,
        "warmup": warmup,
        "model_md5": model_md5,
    }
    kept = None
    if not force:
        kept = reusable_perf(
            perf_path, platform_name, batch_sizes, iterations, settings, engine.version(), device
        )
    if kept is not None:
        print(f"{platform_name} on {device}, {used_threads} threads")
        print(perf_table(kept))
        print(
            f"kept: {perf_path} (measured {kept[0].extra.get('timestamp')} with the same model "
            "and settings on this host; --force measures again)"
        )
        return kept
    engine.load(model_path, None, threads)
    # Seeded so two runs time the same numbers; content barely matters for dense convolutions.
    rng = np.random.default_rng(PERF_SEED)
    records = []
    for size in track(batch_sizes, f"perf {backend}", "batch size", quiet):
        batch = rng.standard_normal((size, *INPUT_SHAPE), dtype=np.float32)
        stats = measure_batch(engine, batch, warmup, iterations)
        records.append(
            PerfRecord(
                platform=platform_name,
                backend=backend,
                batch_size=size,
                images_per_s=images_per_second(size, stats.mean_ms),
                latency=stats,
                iterations=iterations,
                scope="process",
                tool=engine.name,
                tool_version=engine.version(),
                device=device,
                extra={
                    "threads": used_threads,
                    "warmup": warmup,
                    "model_md5": model_md5,
                    "precision": backend_precision(engine),
                    "input": f"random normal, seed {PERF_SEED}",
                    "python": sys.version.split()[0],
                    **stamp(),
                },
            )
        )
    merged = merge_perf_records(perf_path, records)
    write_perf_records(perf_path, merged)
    print(f"{platform_name} on {device}, {used_threads} threads")
    print(perf_table(records))
    others = len(merged) - len(records)
    kept = f"; kept {others} earlier batch size(s) of the same model" if others else ""
    print(f"written: {perf_path}{kept}")
    return records
