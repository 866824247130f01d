"""Inference to per-image dumps and the throughput stage, on a tiny stand-in for PCB."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import pcb.infer
from pcb.constants import FEATURE_BYTES, INPUT_BYTES
from pcb.errors import PcbError
from pcb.fileio import atomic_write_json, read_json
from pcb.infer import (
    dump_path,
    infer_record_path,
    parse_cpu_model,
    run_inference,
    run_perf,
)
from pcb.layout import RunLayout
from pcb.perf import images_per_second, read_perf_records

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from tiny_model import make_tiny_model  # noqa: E402

SPLIT_SIZES = {"query": 5, "gallery": 3}


def stems(split: str) -> list[str]:
    return [f"{i + 1:04d}_c{i % 6 + 1}s1_{i:06d}_00" for i in range(SPLIT_SIZES[split])]


@pytest.fixture()
def layout(tmp_path: Path) -> RunLayout:
    """A run with the tiny model and random bins + .info lists, as preprocess writes them."""
    layout = RunLayout(tmp_path / "run")
    make_tiny_model(layout.onnx_path)
    rng = np.random.default_rng(0)
    for split in SPLIT_SIZES:
        lines = []
        for index, stem in enumerate(stems(split)):
            path = layout.bins_dir(split) / f"{stem}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng.standard_normal((3, 384, 128), dtype=np.float32).tofile(path)
            lines.append(f"{index} bins/{split}/{stem}.bin 64 128")
        layout.info_path(split).write_text("\n".join(lines) + "\n")
    return layout


def expected_features(layout: RunLayout, split: str, stem: str) -> np.ndarray:
    session = ort.InferenceSession(str(layout.onnx_path), providers=["CPUExecutionProvider"])
    image = np.fromfile(layout.bins_dir(split) / f"{stem}.bin", dtype=np.float32)
    return session.run(["output_1"], {"input_1": image.reshape(1, 3, 384, 128)})[0][0]


def test_one_dump_per_stem_equal_to_the_model(layout: RunLayout) -> None:
    # Batch 2 over 5 query images: the last batch is short (1 image).
    counts = run_inference(layout, batch_size=2, threads=1, quiet=True)
    assert counts == SPLIT_SIZES
    for split in SPLIT_SIZES:
        files = sorted(p.name for p in layout.dumps_dir("onnxruntime", split).iterdir())
        assert files == sorted(f"{s}_0.bin" for s in stems(split))
        for stem in stems(split):
            path = dump_path(layout, "onnxruntime", split, stem)
            assert path.stat().st_size == FEATURE_BYTES
            dumped = np.fromfile(path, dtype=np.float32).reshape(2048, 6, 1)
            np.testing.assert_allclose(
                dumped, expected_features(layout, split, stem), rtol=1e-5, atol=1e-5
            )
        record = read_json(infer_record_path(layout, "onnxruntime", split))
        assert record["count"] == SPLIT_SIZES[split]
        assert record["inferred"] == SPLIT_SIZES[split]
        assert record["batch_size"] == 2
        assert record["complete"] is True
        assert len(record["model_md5"]) == 32


def test_resume_keeps_complete_dumps_and_redoes_truncated(layout: RunLayout) -> None:
    run_inference(layout, batch_size=4, threads=1, quiet=True)
    query = stems("query")
    kept = dump_path(layout, "onnxruntime", "query", query[0])
    truncated = dump_path(layout, "onnxruntime", "query", query[1])
    deleted = dump_path(layout, "onnxruntime", "query", query[2])
    os.utime(kept, ns=(1_000_000_000, 1_000_000_000))
    truncated.write_bytes(truncated.read_bytes()[:100])
    deleted.unlink()

    run_inference(layout, batch_size=4, threads=1, quiet=True)

    assert kept.stat().st_mtime_ns == 1_000_000_000  # not rewritten
    for path in (truncated, deleted):
        assert path.stat().st_size == FEATURE_BYTES
    np.testing.assert_allclose(
        np.fromfile(truncated, dtype=np.float32).reshape(2048, 6, 1),
        expected_features(layout, "query", query[1]),
        rtol=1e-5,
        atol=1e-5,
    )
    record = read_json(infer_record_path(layout, "onnxruntime", "query"))
    assert (record["inferred"], record["reused"]) == (2, 3)


def test_changed_model_redoes_every_dump(layout: RunLayout) -> None:
    run_inference(layout, batch_size=4, threads=1, quiet=True)
    path = dump_path(layout, "onnxruntime", "gallery", stems("gallery")[0])
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    record_path = infer_record_path(layout, "onnxruntime", "gallery")
    record = read_json(record_path)
    record["model_md5"] = "0" * 32  # as if an earlier export had made these dumps
    atomic_write_json(record_path, record)

    run_inference(layout, batch_size=4, threads=1, quiet=True)

    assert path.stat().st_mtime_ns != 1_000_000_000
    assert read_json(record_path)["inferred"] == SPLIT_SIZES["gallery"]


def test_interrupted_redo_leaves_no_old_dump_behind(
    layout: RunLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_inference(layout, batch_size=1, threads=1, quiet=True)
    record_path = infer_record_path(layout, "onnxruntime", "gallery")
    atomic_write_json(record_path, {**read_json(record_path), "model_md5": "0" * 32})
    gallery = stems("gallery")
    # A read that fails mid-split (every bin is checked before the first batch, so a
    # damaged file would stop it before anything is redone).
    load_bin = pcb.infer.load_bin

    def failing(path: Path) -> np.ndarray:
        if path.stem == gallery[1]:
            raise PcbError(f"{path}: read error")
        return load_bin(path)

    monkeypatch.setattr(pcb.infer, "load_bin", failing)

    with pytest.raises(PcbError, match="read error"):
        run_inference(layout, batch_size=1, threads=1, quiet=True)

    assert dump_path(layout, "onnxruntime", "gallery", gallery[0]).is_file()  # new model's
    assert not dump_path(layout, "onnxruntime", "gallery", gallery[2]).exists()
    assert read_json(record_path)["complete"] is False


def test_wrong_size_bin_names_the_file(layout: RunLayout) -> None:
    bad = layout.bins_dir("gallery") / f"{stems('gallery')[1]}.bin"
    bad.write_bytes(b"\0" * (INPUT_BYTES - 4))
    with pytest.raises(PcbError, match=f"{bad.name}.*{INPUT_BYTES - 4} bytes"):
        run_inference(layout, threads=1, quiet=True)


def test_missing_info_file(layout: RunLayout) -> None:
    layout.info_path("gallery").unlink()
    with pytest.raises(PcbError, match=r"gallery\.info.*pcb preprocess"):
        run_inference(layout, threads=1, quiet=True)


def test_missing_model(layout: RunLayout) -> None:
    layout.onnx_path.unlink()
    with pytest.raises(PcbError, match="pcb export"):
        run_inference(layout, threads=1, quiet=True)
    with pytest.raises(PcbError, match="pcb export"):
        run_perf(layout, batch_sizes=(1,), threads=1, quiet=True)


def test_perf_records_written_and_consistent(layout: RunLayout) -> None:
    records = run_perf(layout, batch_sizes=(1, 3), warmup=1, iterations=3, threads=1, quiet=True)
    assert read_perf_records(layout.perf_path("onnxruntime")) == records
    assert [r.batch_size for r in records] == [1, 3]
    for record in records:
        assert record.platform == "cpu-onnxruntime-fp32"
        assert record.tool == "onnxruntime"
        assert record.tool_version == ort.__version__
        assert record.scope == "process"
        assert record.iterations == 3
        assert record.extra["threads"] == 1
        assert record.device
        assert record.images_per_s == pytest.approx(
            images_per_second(record.batch_size, record.latency.mean_ms)
        )
        assert record.latency.min_ms <= record.latency.median_ms <= record.latency.max_ms


def test_parse_cpu_model() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8375C\n"
    assert parse_cpu_model(text) == "Intel(R) Xeon(R) 8375C"
    assert parse_cpu_model("processor\t: 0\nCPU part\t: 0xd0c\n") is None


def test_perf_of_one_batch_size_replaces_that_size_only(layout: RunLayout) -> None:
    """Issue 14: `perf --batch-sizes 3` after a perf of 1,3 keeps batch 1 as measured then and
    replaces batch 3 with the new measurement, its own time recorded."""
    first = run_perf(layout, batch_sizes=(1, 3), warmup=0, iterations=2, threads=1, quiet=True)
    again = run_perf(
        layout, batch_sizes=(3,), warmup=0, iterations=2, threads=1, quiet=True, force=True
    )
    stored = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in stored] == [1, 3]
    assert stored[0] == first[0]
    assert stored[1] == again[0] and stored[1].extra["timestamp"] >= first[1].extra["timestamp"]
    # Nothing changed: batch 3 alone is kept from the merged file, not measured again.
    assert run_perf(layout, batch_sizes=(3,), warmup=0, iterations=2, threads=1, quiet=True) == [
        stored[1]
    ]


def test_perf_of_another_model_drops_the_old_batch_sizes(layout: RunLayout) -> None:
    run_perf(layout, batch_sizes=(1, 3), warmup=0, iterations=2, threads=1, quiet=True)
    make_tiny_model(layout.onnx_path, batch="B")  # another file, another md5
    run_perf(layout, batch_sizes=(3,), warmup=0, iterations=2, threads=1, quiet=True)
    stored = read_perf_records(layout.perf_path("onnxruntime"))
    assert [r.batch_size for r in stored] == [3]
