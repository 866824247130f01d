"""Engine cache keys, records and reuse decisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pcb.errors import PcbError
from pcb.layout import RunLayout
from pcb.tensorrt.engine_cache import (
    EngineSpec,
    calibration_cache_path,
    commit_engine,
    decide,
    discard,
    engine_key,
    engine_path,
    read_record,
    record_path,
    temp_engine_path,
)

SPEC = EngineSpec(
    onnx_md5="0" * 32,
    precision="fp16",
    min_batch=1,
    opt_batch=64,
    max_batch=64,
    tensorrt_version="10.0.1",
    gpu="Tesla T4",
)


def test_paths(tmp_path: Path):
    layout = RunLayout(tmp_path / "run")
    engine = engine_path(layout, "fp16", 64)
    assert engine == tmp_path / "run/engines/tensorrt/fp16/pcb_bs64.engine"
    assert record_path(engine) == engine.with_name("pcb_bs64.json")
    assert (
        calibration_cache_path(layout) == tmp_path / "run/engines/tensorrt/int8/calibration.cache"
    )
    assert temp_engine_path(engine).parent == engine.parent
    assert temp_engine_path(engine).name.startswith(".pcb_bs64.engine.")


def test_key_is_stable_and_short():
    assert engine_key(SPEC) == engine_key(dataclasses.replace(SPEC)) == SPEC.key()
    assert len(SPEC.key()) == 16 and int(SPEC.key(), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_md5": "1" * 32},
        {"precision": "fp32"},
        {"min_batch": 2},
        {"opt_batch": 32},
        {"max_batch": 128},
        {"tensorrt_version": "8.6.1"},
        {"gpu": "NVIDIA A10"},
    ],
)
def test_every_field_changes_the_key(change):
    assert dataclasses.replace(SPEC, **change).key() != SPEC.key()


def test_int8_key_depends_on_the_calibration_cache():
    a = dataclasses.replace(SPEC, precision="int8", calib_md5="a" * 32)
    b = dataclasses.replace(a, calib_md5="b" * 32)
    assert a.key() != b.key()
    with pytest.raises(PcbError, match="int8 engine spec needs the md5"):
        dataclasses.replace(SPEC, precision="int8")


def test_bad_profiles_are_refused():
    with pytest.raises(PcbError, match="0 < min <= opt <= max"):
        dataclasses.replace(SPEC, min_batch=8, opt_batch=4)
    with pytest.raises(PcbError, match="precision"):
        dataclasses.replace(SPEC, precision="fp8")


def test_shapes():
    assert SPEC.shapes() == {
        "min": "input_1:1x3x384x128",
        "opt": "input_1:64x3x384x128",
        "max": "input_1:64x3x384x128",
    }


def _commit(engine: Path, spec: EngineSpec = SPEC, data: bytes = b"plan") -> None:
    temp = temp_engine_path(engine)
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(data)
    commit_engine(temp, engine, spec, {"device": "Tesla T4"})


def test_reuse_only_with_a_matching_record(tmp_path: Path):
    engine = tmp_path / "pcb_bs64.engine"
    assert decide(engine, SPEC).reason == "no saved engine yet"
    _commit(engine)
    assert not temp_engine_path(engine).exists()
    assert engine.read_bytes() == b"plan"
    record = read_record(engine)
    assert record["key"] == SPEC.key() and record["spec"]["gpu"] == "Tesla T4"
    assert record["device"] == "Tesla T4" and record["built"]
    assert decide(engine, SPEC).reuse


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"onnx_md5": "f" * 32}, "the ONNX model changed"),
        ({"tensorrt_version": "10.3.0"}, "another TensorRT version ('10.0.1' -> '10.3.0')"),
        ({"gpu": "NVIDIA L4"}, "another GPU"),
        ({"opt_batch": 32, "max_batch": 32}, "the profile's opt batch changed"),
    ],
)
def test_changes_say_why_the_engine_is_rebuilt(tmp_path: Path, change, reason):
    engine = tmp_path / "pcb_bs64.engine"
    _commit(engine)
    decision = decide(engine, dataclasses.replace(SPEC, **change))
    assert not decision.reuse
    assert reason in decision.reason


def test_unknown_version_is_never_trusted(tmp_path: Path):
    engine = tmp_path / "pcb_bs64.engine"
    unknown = dataclasses.replace(SPEC, tensorrt_version="unknown")
    _commit(engine, unknown)
    assert not decide(engine, unknown).reuse


def test_engine_without_record_or_with_garbage_record(tmp_path: Path):
    engine = tmp_path / "pcb_bs64.engine"
    engine.write_bytes(b"plan")
    assert "no readable record" in decide(engine, SPEC).reason
    record_path(engine).write_text("{not json")
    assert not decide(engine, SPEC).reuse


def test_commit_refuses_a_missing_engine(tmp_path: Path):
    engine = tmp_path / "pcb_bs64.engine"
    with pytest.raises(PcbError, match="saved no engine"):
        commit_engine(temp_engine_path(engine), engine, SPEC, {})


def test_recommit_replaces_and_discard_removes(tmp_path: Path):
    engine = tmp_path / "pcb_bs64.engine"
    _commit(engine)
    other = dataclasses.replace(SPEC, tensorrt_version="10.1.0")
    _commit(engine, other, b"plan 2")
    assert engine.read_bytes() == b"plan 2"
    assert decide(engine, other).reuse and not decide(engine, SPEC).reuse
    discard(engine)
    assert not engine.exists() and not record_path(engine).exists()
