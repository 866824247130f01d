from __future__ import annotations

import torch

from pcb.model import PCB, init_upstream


def make_model() -> PCB:
    return init_upstream(PCB(), torch.Generator().manual_seed(0)).eval()


def test_state_dict_keys_follow_upstream_names():
    state = PCB().state_dict()
    assert "base.conv1.weight" in state
    assert "base.bn1.running_var" in state
    assert "base.layer4.2.bn3.weight" in state
    assert "base.layer4.0.downsample.0.weight" in state
    assert state["base.fc.weight"].shape == (1000, 2048)
    assert state["local_conv.weight"].shape == (256, 2048, 1, 1)
    assert "local_conv.bias" not in state
    assert state["feat_bn2d.running_mean"].shape == (256,)
    for stripe in range(6):
        assert state[f"instance{stripe}.weight"].shape == (751, 256)
        assert state[f"instance{stripe}.bias"].shape == (751,)
    assert not any(key.startswith(("module.", "instance6")) for key in state)
    layers = {key.split(".")[1] for key in state if key.startswith("base.layer")}
    assert layers == {"layer1", "layer2", "layer3", "layer4"}
    assert {int(k.split(".")[2]) for k in state if k.startswith("base.layer3.")} == set(range(6))


def test_last_stride_is_one():
    block = PCB().base.layer4[0]
    assert block.conv2.stride == (1, 1)
    assert block.downsample[0].stride == (1, 1)
    assert PCB().base.layer3[0].conv2.stride == (2, 2)


def test_parameter_count_without_classifiers_is_24m():
    count = sum(
        p.numel()
        for name, p in PCB().named_parameters()
        if not name.startswith(("instance", "base.fc"))
    )
    assert 23.9e6 < count < 24.1e6


def test_feature_is_per_stripe_unit_norm():
    model = make_model()
    with torch.no_grad():
        x = torch.randn(2, 3, 384, 128)
        assert model.base(x).shape == (2, 2048, 24, 8)
        feature = model(x)
    assert feature.shape == (2, 2048, 6, 1)
    torch.testing.assert_close(feature.norm(dim=1), torch.ones(2, 6, 1))


def test_stripes_are_horizontal_bands():
    model = make_model()
    x = torch.randn(1, 3, 384, 128)
    changed = x.clone()
    changed[:, :, :32] += 3.0  # only the top of the image
    with torch.no_grad():
        before, after = model(x), model(changed)
    moved = (after - before).abs().amax(dim=(0, 1, 3))
    assert moved[0] > 1e-3
    assert moved[-1] < moved[0] / 10


def test_classifier_head_gives_six_logit_sets():
    logits = make_model().classify(torch.randn(2, 3, 384, 128))
    assert [tuple(t.shape) for t in logits] == [(2, 751)] * 6
