"""A fake `tensorrt` module and CUDA runtime: the slice of the TensorRT 10 Python API that
pcb.backends.tensorrt_backend and pcb.tensorrt.calibration call, with device memory in a dict.

The fake engine computes each image's feature as its mean, broadcast to 2048 x 6 x 1, so a test
can check that every image went in and came out in its place. An "engine file" is JSON:
{"pcb_fake_engine": true, "max_batch": N, "tensors": [...], "dtype": "float32"}.
"""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path
from typing import Any

import numpy as np

INPUT, OUTPUT = "input_1", "output_1"
FEATURE = (2048, 6, 1)
MEMORY: dict[int, bytearray] = {}
_POINTERS = itertools.count(0x1000, 0x1000)
BUILDS: list[dict[str, Any]] = []


def engine_bytes(max_batch: int, tensors=(INPUT, OUTPUT), dtype: str = "float32") -> bytes:
    payload = {"pcb_fake_engine": True, "max_batch": max_batch, "tensors": list(tensors)}
    return json.dumps({**payload, "dtype": dtype}).encode()


class FakeCuda:
    """Stands in for pcb.backends.cudart.CudaRuntime."""

    def __init__(self) -> None:
        self.device = None
        self.freed: list[int] = []

    def set_device(self, device: int) -> None:
        self.device = device

    def malloc(self, nbytes: int) -> int:
        pointer = next(_POINTERS)
        MEMORY[pointer] = bytearray(nbytes)
        return pointer

    def free(self, pointer: int) -> None:
        if pointer:
            MEMORY.pop(pointer)
            self.freed.append(pointer)

    def stream_create(self) -> int:
        return 7

    def stream_destroy(self, stream: int) -> None:
        pass

    def synchronize(self, stream: int) -> None:
        pass

    def to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        data = array.tobytes()
        MEMORY[pointer][: len(data)] = data

    def to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        array.reshape(-1).view(np.uint8)[:] = np.frombuffer(
            bytes(MEMORY[pointer][: array.nbytes]), dtype=np.uint8
        )


class Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


def init_libnvinfer_plugins(logger: Logger, namespace: str) -> bool:
    return True


def nptype(dtype: str) -> Any:
    return np.dtype(dtype).type


class Context:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        if name != INPUT or not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str):
        return (self.shape[0], *FEATURE)

    def set_tensor_address(self, name: str, pointer: int) -> None:
        self.addresses[name] = pointer

    def execute_async_v3(self, stream: int) -> bool:
        count = self.shape[0]
        size = count * int(np.prod(self.shape[1:])) * 4
        images = np.frombuffer(bytes(MEMORY[self.addresses[INPUT]][:size]), dtype=np.float32)
        means = images.reshape(count, -1).mean(axis=1).astype(self.engine.dtype)
        out = np.broadcast_to(means[:, None, None, None], (count, *FEATURE)).tobytes()
        MEMORY[self.addresses[OUTPUT]][: len(out)] = out
        return True


class Engine:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.max_batch = payload["max_batch"]
        self.tensors = payload["tensors"]
        self.dtype = payload.get("dtype", "float32")
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index]

    def get_tensor_profile_shape(self, name: str, profile: int):
        return [(1, 3, 384, 128), (self.max_batch, 3, 384, 128), (self.max_batch, 3, 384, 128)]

    def get_tensor_dtype(self, name: str) -> str:
        return self.dtype

    def create_execution_context(self) -> Context:
        return Context(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
        try:
            payload = json.loads(data)
        except ValueError:
            return None  # what TensorRT does with a foreign plan, after logging an error
        return Engine(payload) if payload.get("pcb_fake_engine") else None


# ---- the builder side (calibration) ------------------------------------------------------------


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class BuilderFlag:
    INT8 = "INT8"


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, low, opt, high) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class Config:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.profiles: list[Profile] = []
        self.calibration_profile: Profile | None = None
        self.int8_calibrator: Any = None

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: Profile) -> None:
        self.calibration_profile = profile


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.parsed: str | None = None


class OnnxParser:
    def __init__(self, network: Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        if not Path(path).read_bytes().startswith(b"onnx"):
            self.errors.append("ModelImporter.cpp: not an ONNX model")
            return False
        self.network.parsed = path
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> Network:
        return Network(flags)

    def create_builder_config(self) -> Config:
        return Config()

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
        calibrator = config.int8_calibrator
        batch = calibrator.get_batch_size()
        fed, means = 0, []
        while (pointers := calibrator.get_batch([INPUT])) is not None:
            size = batch * 3 * 384 * 128 * 4
            images = np.frombuffer(bytes(MEMORY[pointers[0]][:size]), dtype=np.float32)
            means.append(float(images.mean()))
            fed += 1
        BUILDS.append({"flags": set(config.flags), "fed": fed, "batch": batch, "means": means})
        calibrator.write_calibration_cache(memoryview(b"TRT-100001-EntropyCalibration2\n"))
        return b"engine"


def module() -> types.ModuleType:
    """This module as `tensorrt` (a fresh BUILDS list each time)."""
    BUILDS.clear()
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.0.1"
    for name in (
        "Logger",
        "Runtime",
        "init_libnvinfer_plugins",
        "nptype",
        "IInt8EntropyCalibrator2",
        "BuilderFlag",
        "NetworkDefinitionCreationFlag",
        "OnnxParser",
        "Builder",
    ):
        setattr(fake, name, globals()[name])
    return fake
