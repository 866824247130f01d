from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from pcb.checkpoint import load_checkpoint
from pcb.constants import PCB_3_7_NAME
from pcb.errors import PcbError
from pcb.model import PCB, init_upstream

REPO = Path(__file__).resolve().parents[1]


def reference_model() -> PCB:
    return init_upstream(PCB(), torch.Generator().manual_seed(7)).eval()


def features(model: PCB) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.ones(1, 3, 384, 128))


@pytest.fixture(scope="module")
def upstream_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole-model pickle written by a process where `reid` and `torchvision` are real
    (on-disk) packages, as PCB_RPP_for_reID saved PCB_3_7.pt."""
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
    target = root / "PCB_upstream.pt"
    script = textwrap.dedent(
        f"""
        import torch
        import reid.models.resnet as reid_resnet
        import torchvision.models.resnet as tv_resnet
        from pcb.model import PCB, Bottleneck, ResNet50Trunk, init_upstream

        model = init_upstream(PCB(), torch.Generator().manual_seed(7)).eval()
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.__class__ = tv_resnet.Bottleneck
            elif isinstance(module, ResNet50Trunk):
                module.__class__ = tv_resnet.ResNet
        model.__class__ = reid_resnet.ResNet
        model.FCN = True
        torch.save(model, {str(target)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    return target


def test_upstream_pickle_loads_without_reid_or_torchvision(upstream_pickle: Path):
    assert "reid" not in sys.modules
    loaded = load_checkpoint(upstream_pickle)
    assert loaded.format == "pickled-model"
    assert "reid" not in sys.modules
    torch.testing.assert_close(features(loaded.model), features(reference_model()))


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
    torch.testing.assert_close(features(loaded.model), features(reference_model()))


def test_plain_state_dict(tmp_path: Path):
    path = tmp_path / "weights.pt"
    torch.save(reference_model().state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.format == "state-dict"
    torch.testing.assert_close(features(loaded.model), features(reference_model()))


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
