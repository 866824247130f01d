from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_checkpoints import (
    StorageProxy,
    TensorProxy,
    legacy_checkpoint,
    proxy_pickle,
    rewrite_zip,
)

from pcb.checkpoint import LIMITS, load_checkpoint
from pcb.checkpoint.archive import open_checkpoint
from pcb.checkpoint.state import extract, materialise
from pcb.constants import PCB_3_7_NAME
from pcb.errors import PcbError
from pcb.model import PCB, init_upstream

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def reference_model() -> PCB:
    return init_upstream(PCB(), torch.Generator().manual_seed(7)).eval()


def features(model: PCB) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.ones(1, 3, 384, 128))


@functools.lru_cache(maxsize=1)
def reference_features() -> torch.Tensor:
    return features(reference_model())


UPSTREAM_WRITER = """
import sys, types
import torch
from torch import nn
import reid.models.resnet as reid_resnet
import torchvision.models.resnet as tv_resnet
from pcb.model import PCB, Bottleneck, ResNet50Trunk, init_upstream

out = sys.argv[1]


def upstream():
    model = init_upstream(PCB(), torch.Generator().manual_seed(7)).eval()
    for module in model.modules():
        if isinstance(module, Bottleneck):
            module.__class__ = tv_resnet.Bottleneck
        elif isinstance(module, ResNet50Trunk):
            module.__class__ = tv_resnet.ResNet
    model.__class__ = reid_resnet.ResNet
    model.FCN = True
    return model


def save(obj, name, legacy=False):
    torch.save(obj, f"{out}/{name}.pt", _use_new_zipfile_serialization=not legacy)


save(upstream(), "zip")
save(upstream(), "legacy", legacy=True)
save(nn.DataParallel(upstream()), "data-parallel-zip")
save(nn.DataParallel(upstream()), "data-parallel-legacy", legacy=True)

# torch 0.4 - 1.2 (tests/fixtures/checkpoint/torch04_pickling.md): every module holds
# `_backend`, reduced to torch.nn.backends.thnn._get_thnn_function_backend(); 0.4.0 had no
# BatchNorm step counter; 0.4.1 pickled parameters as Parameter(tensor, requires_grad), 0.4.0
# as plain tensors.
thnn = types.ModuleType("torch.nn.backends.thnn")


class THNNFunctionBackend:
    def __reduce__(self):
        return (_get_thnn_function_backend, ())


def _get_thnn_function_backend():
    return backend


for item in (THNNFunctionBackend, _get_thnn_function_backend):
    item.__module__ = thnn.__name__
    setattr(thnn, item.__name__, item)
backend = THNNFunctionBackend()
sys.modules[thnn.__name__] = thnn


def torch04():
    model = upstream()
    for module in model.modules():
        module.__dict__["_backend"] = backend
        module._buffers.pop("num_batches_tracked", None)
    return model


nn.Parameter.__reduce_ex__ = lambda self, proto: (nn.Parameter, (self.data, self.requires_grad))
save(torch04(), "torch041", legacy=True)
nn.Parameter.__reduce_ex__ = lambda self, proto: torch.Tensor.__reduce_ex__(self.data, proto)
save(torch04(), "torch040", legacy=True)
"""
UPSTREAM_FORMATS = (
    "zip",
    "legacy",
    "data-parallel-zip",
    "data-parallel-legacy",
    "torch041",
    "torch040",
)


@pytest.fixture(scope="module")
def upstream_pickles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Whole-model pickles written by a process where `reid` and `torchvision` are real
    (on-disk) packages, as PCB_RPP_for_reID saved PCB_3_7.pt, in each format met."""
    root = tmp_path_factory.mktemp("upstream")
    for package in ("reid", "reid/models", "torchvision", "torchvision/models"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "torchvision/models/resnet.py").write_text(
        "from torch import nn\n\n"
        "class Bottleneck(nn.Module):\n    pass\n\n"
        "class ResNet(nn.Module):\n    pass\n"
    )
    (root / "reid/models/resnet.py").write_text(
        "from torch import nn\n\nclass ResNet(nn.Module):\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    subprocess.run([sys.executable, "-c", UPSTREAM_WRITER, str(root)], check=True, env=env)
    return {name: root / f"{name}.pt" for name in UPSTREAM_FORMATS}


@pytest.mark.parametrize("form", UPSTREAM_FORMATS)
def test_upstream_pickle_loads_without_reid_or_torchvision(
    form: str, upstream_pickles: dict[str, Path]
):
    path = upstream_pickles[form]
    assert path.read_bytes().startswith(b"PK") == form.endswith("zip")
    assert "reid" not in sys.modules
    loaded = load_checkpoint(path)
    assert loaded.format == "pickled-model"
    assert "reid" not in sys.modules and "torch.nn.backends.thnn" not in sys.modules
    torch.testing.assert_close(features(loaded.model), reference_features())


def test_torch04_files_carry_what_the_fixture_quotes(upstream_pickles: dict[str, Path]):
    """The writer above reproduces the two torch 0.4-era forms the fixture quotes from public
    sources, and each file really holds them (so the load test covers them)."""
    quoted = (FIXTURES / "checkpoint" / "torch04_pickling.md").read_text()
    assert "return (_get_thnn_function_backend, ())" in quoted
    assert "return (Parameter, (tensor, self.requires_grad))" in quoted
    for form in ("torch041", "torch040"):
        raw = upstream_pickles[form].read_bytes()
        assert b"ctorch.nn.backends.thnn\n_get_thnn_function_backend\n" in raw
        assert b"num_batches_tracked" not in raw
        assert (b"ctorch.nn.parameter\nParameter\n" in raw) == (form == "torch041")
        assert b"_rebuild_parameter" not in raw
    assert b"_rebuild_parameter" in upstream_pickles["legacy"].read_bytes()


def test_demo_checkpoint_is_an_upstream_pickle(demo_checkpoint: Path):
    with open(demo_checkpoint, "rb") as handle:
        raw = handle.read()
    assert b"reid.models.resnet" in raw
    assert b"torchvision.models.resnet" in raw
    assert load_checkpoint(demo_checkpoint).format == "pickled-model"
    assert "reid" not in sys.modules and "torchvision" not in sys.modules


def test_training_checkpoint_with_data_parallel_prefix(tmp_path: Path):
    state = reference_model().state_dict()
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {
            "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items()),
            "epoch": 60,
            "best_top1": 0.92,
        },
        path,
    )
    loaded = load_checkpoint(path)
    assert loaded.format == "training-checkpoint"
    torch.testing.assert_close(features(loaded.model), reference_features())


def test_plain_state_dict(tmp_path: Path):
    path = tmp_path / "weights.pt"
    torch.save(reference_model().state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.format == "state-dict"
    torch.testing.assert_close(features(loaded.model), reference_features())


def test_other_number_of_classes_loads(tmp_path: Path):
    path = tmp_path / "duke.pt"
    torch.save(PCB(num_classes=702).state_dict(), path)
    assert load_checkpoint(path).model.num_classes == 702


def test_missing_file_names_it_and_the_fix(tmp_path: Path):
    with pytest.raises(PcbError, match=r"nope\.pt not found.*demo-data"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path: Path, demo_checkpoint: Path):
    path = tmp_path / "cut.pt"
    path.write_bytes(demo_checkpoint.read_bytes()[:5_000_000])
    with pytest.raises(PcbError, match=r"cut\.pt: cannot read it as a PyTorch checkpoint"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(PcbError, match=r"notes\.pt.*(truncated|not a checkpoint)"):
        load_checkpoint(path)


def test_other_architecture_lists_keys(tmp_path: Path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, path)
    with pytest.raises(PcbError, match=r"not a PCB checkpoint, missing \d+ keys: base\.conv1"):
        load_checkpoint(path)


def test_wrong_shapes_are_named(tmp_path: Path):
    state = reference_model().state_dict()
    state["local_conv.weight"] = torch.zeros(128, 2048, 1, 1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(PcbError, match=r"local_conv\.weight \(128, 2048, 1, 1\)"):
        load_checkpoint(path)


def test_non_model_payload(tmp_path: Path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(PcbError, match=r"holds a list, not a model"):
        load_checkpoint(path)


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_cannot_run_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": _RunsCommand(marker)}}, path, pickle_protocol=2)
    with pytest.raises(PcbError, match=r"refused to load class `(posix|os)\.system`"):
        load_checkpoint(path)
    assert not marker.exists()


def test_crafted_raw_pickle_cannot_run_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_raw.pt"
    path.write_bytes(pickle.dumps(_RunsCommand(marker), protocol=2))
    with pytest.raises(PcbError):
        load_checkpoint(path)
    assert not marker.exists()


def test_wrong_md5_for_the_published_name_warns(tmp_path: Path):
    path = tmp_path / PCB_3_7_NAME
    torch.save(reference_model().state_dict(), path)
    with pytest.warns(UserWarning, match="md5 .* differs from the published"):
        loaded = load_checkpoint(path)
    assert loaded.format == "state-dict"


# --- tensor layouts: what comes out is what torch.load gives -----------------------------------


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The loader's view of a state-dict file: every tensor, through the inert path."""
    with open_checkpoint(path, LIMITS) as checkpoint:
        refs, form = extract(checkpoint.payload, LIMITS)
        assert form == "state-dict"
        cache: dict = {}
        return {
            key: materialise(ref, checkpoint.read_storage, checkpoint.byteorder, cache).clone()
            for key, ref in refs.items()
        }


def odd_tensors() -> OrderedDict[str, torch.Tensor]:
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    return OrderedDict(
        [
            ("base", base),
            ("transposed", base.transpose(0, 2)),
            ("offset", base[1:]),
            ("strided", base[:, ::2, 1:]),
            ("shared", base.view(-1)[7:19].view(3, 4)),
            ("expanded", torch.ones(1, 4, dtype=torch.float64).expand(3, 4)),
            ("scalar", torch.tensor(3.5)),
            ("empty", torch.zeros(0, 3)),
            ("int64", torch.arange(10)),
            ("half", base.half()[0]),
            ("bfloat16", base.bfloat16()[2, 1:]),
            ("bool", base > 30),
            ("int8", torch.arange(-5, 5, dtype=torch.int8)),
        ]
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_strides_offsets_and_shared_storages_match_torch_load(tmp_path: Path, legacy: bool):
    path = tmp_path / "odd.pt"
    torch.save(odd_tensors(), path, _use_new_zipfile_serialization=not legacy)
    expected = torch.load(path, weights_only=True)
    got = read_tensors(path)
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


def test_big_endian_zip_is_swapped_like_torch_load(tmp_path: Path):
    # torch.save on a big-endian host writes byteorder "big" and big-endian storage bytes.
    state = OrderedDict(a=torch.arange(12.0).reshape(3, 4).t(), b=torch.linspace(-1, 1, 7))
    little = tmp_path / "little.pt"
    torch.save(state, little)

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            return np.frombuffer(data, dtype="<f4").astype(">f4").tobytes()
        return data

    big = tmp_path / "big.pt"
    big.write_bytes(rewrite_zip(little.read_bytes(), to_big))
    assert big.read_bytes() != little.read_bytes()
    expected = torch.load(big, weights_only=True)
    got = read_tensors(big)
    for key in state:
        assert torch.equal(got[key], expected[key]) and torch.equal(got[key], state[key])


def test_legacy_storage_views(tmp_path: Path):
    # Legacy persistent ids may name a view (key, offset, size) of a root storage.
    root = StorageProxy("5", 10, view=None)
    view = StorageProxy("5", 10, view=("6", 4, 3))
    obj = proxy_pickle(
        OrderedDict(whole=TensorProxy(root, 0, (10,), (1,)), part=TensorProxy(view, 1, (2,), (1,))),
        legacy=True,
    )
    path = tmp_path / "views.pt"
    path.write_bytes(legacy_checkpoint(obj, [("5", 10, torch.arange(10.0).numpy().tobytes())]))
    expected = torch.load(path, weights_only=False)  # a benign file made here
    got = read_tensors(path)
    assert torch.equal(got["part"], torch.tensor([5.0, 6.0]))
    for key in expected:
        assert torch.equal(got[key], expected[key])


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pcb_packed_into_one_storage_with_strided_views(tmp_path: Path, legacy: bool):
    """Every float tensor a (mostly non-contiguous) view at its own offset of one storage."""
    state = reference_model().state_dict()
    floats = {k: v for k, v in state.items() if v.is_floating_point()}
    flat = torch.empty(sum(v.numel() for v in floats.values()))
    packed, offset = OrderedDict(state), 0
    for key, value in floats.items():
        stored = value.transpose(0, 1).contiguous() if value.dim() >= 2 else value
        view = flat[offset : offset + value.numel()].view(stored.shape)
        view.copy_(stored)
        packed[key] = view.transpose(0, 1) if value.dim() >= 2 else view
        offset += value.numel()
    path = tmp_path / "packed.pt"
    torch.save(packed, path, _use_new_zipfile_serialization=not legacy)
    assert not packed["base.conv1.weight"].is_contiguous()
    loaded = load_checkpoint(path)
    torch.testing.assert_close(features(loaded.model), reference_features())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_open_reid_training_checkpoint_with_numpy_best_top1(tmp_path: Path, legacy: bool):
    # open-reid's trainer saves best_top1 as the numpy float64 its evaluator returns.
    path = tmp_path / "checkpoint.pth.tar"
    checkpoint = {
        "state_dict": reference_model().state_dict(),
        "epoch": 60,
        "best_top1": np.float64(0.921),
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    assert b"multiarray" in path.read_bytes()
    loaded = load_checkpoint(path)
    assert loaded.format == "training-checkpoint"
    torch.testing.assert_close(features(loaded.model), reference_features())
