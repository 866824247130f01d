"""The PCB network (Sun et al., arXiv 1711.09349) with the upstream attribute names.

Attribute names match PCB_RPP_for_reID's `reid.models.resnet.ResNet` (FCN mode) holding a
torchvision ResNet-50 as `base`, so upstream state_dicts load key for key. The trunk is
written out here because torchvision cannot be a dependency.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .constants import FEATURE_CHANNELS, NUM_TRAIN_IDS

LOCAL_FEATURES = 256
# A 384x128 input leaves a 24x8 map after the stride-16 trunk; (4, 8) cuts it into six
# horizontal stripes. Upstream derives the kernel with float arithmetic from the map size,
# which breaks ONNX export with a dynamic batch axis, so it is a constant here.
STRIPE_POOL = (4, 8)
# (blocks, width, stride) of ResNet-50's four stages; layer4's stride is 1 in PCB.
RESNET50_STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 1))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50Trunk(nn.Module):
    """torchvision's ResNet-50 layout (conv1 ... layer4, avgpool, fc), last stride 1."""

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for index, (blocks, width, stride) in enumerate(RESNET50_STAGES, start=1):
            setattr(self, f"layer{index}", self._make_layer(width, blocks, stride))
        # Unused by PCB but present in upstream checkpoints (the ImageNet head).
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(FEATURE_CHANNELS, 1000)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The N x 2048 x H/16 x W/16 feature map (avgpool and fc are not applied)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PCB(nn.Module):
    """PCB: ResNet-50 trunk, six stripes; `forward` returns the retrieval feature."""

    def __init__(self, num_classes: int = NUM_TRAIN_IDS, dropout: float = 0.5) -> None:
        super().__init__()
        self.base = ResNet50Trunk()
        self.drop = nn.Dropout(dropout)
        self.local_conv = nn.Conv2d(FEATURE_CHANNELS, LOCAL_FEATURES, kernel_size=1, bias=False)
        self.feat_bn2d = nn.BatchNorm2d(LOCAL_FEATURES)
        for stripe in range(6):
            setattr(self, f"instance{stripe}", nn.Linear(LOCAL_FEATURES, num_classes))
        self.num_classes = num_classes

    def stripes(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pooled stripes, N x 2048 x 6 x 1, before normalisation."""
        return F.avg_pool2d(self.base(x), kernel_size=STRIPE_POOL, stride=STRIPE_POOL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-stripe L2-normalised features, N x 2048 x 6 x 1 (upstream's `out0`)."""
        pooled = self.stripes(x)
        return pooled / pooled.norm(p=2, dim=1, keepdim=True)

    def classify(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The training head: six stripe classifiers' logits (not exported)."""
        y = F.relu(self.feat_bn2d(self.local_conv(self.drop(self.stripes(x)))))
        return [
            getattr(self, f"instance{i}")(part.flatten(1)) for i, part in enumerate(y.chunk(6, 2))
        ]


def init_upstream(model: PCB, generator: torch.Generator | None = None) -> PCB:
    """Upstream's initialisation: He-normal (fan_out) convolutions, unit BN, N(0, 0.001) linears."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.001, generator=generator)
                module.bias.zero_()
    return model
