"""FLOPs per image counted from the ONNX graph, checked against PyTorch forward hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnx")
from tiny_model import make_tiny_model  # noqa: E402

from pcb.bench.cpu_inference import macs_per_image  # noqa: E402


def test_tiny_model_macs(tmp_path: Path) -> None:
    # AveragePool to 6 x 1, then a 1x1 Conv 3 -> 2048: 2048 x 6 outputs of 3 MACs each.
    assert macs_per_image(make_tiny_model(tmp_path / "m.onnx")) == {"Conv": 2048 * 6 * 3}


def test_pcb_macs_match_pytorch_hooks(tmp_path: Path, demo_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from pcb.checkpoint import load_checkpoint
    from pcb.export import onnx_bytes

    model = load_checkpoint(demo_checkpoint).model.eval()
    path = tmp_path / "pcb.onnx"
    path.write_bytes(onnx_bytes(model))
    counted = []

    def hook(module, inputs, output):
        per_output = module.in_channels // module.groups * module.kernel_size[0]
        counted.append(output.numel() * per_output * module.kernel_size[1])

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 384, 128))
    macs = macs_per_image(path)
    assert macs == {"Conv": sum(counted)}
    # ResNet-50 at 384 x 128 with a stride-1 layer4: about 12.2 GFLOP (2 x MACs) per image.
    assert 12.0e9 < 2 * macs["Conv"] < 12.4e9
