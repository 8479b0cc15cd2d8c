"""VGG-11/13/16/19 with BatchNorm after every 3×3 convolution.

Module names match torchvision's `vggNN_bn`, so its state_dicts load here.
The tutorial's listing ends in `Linear(4097, num_classes)`; that typo breaks
the forward pass, and the width here is the correct 4096.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .catalog import register

# Output channels per 3×3 convolution; "M" is a 2×2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}


def make_features(config: list[int | str]) -> nn.Sequential:
    """Conv(3×3, pad 1) + BatchNorm + ReLU per width, MaxPool(2) per "M"."""
    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            width = int(item)
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Stacked 3×3 convolutions, a 7×7 adaptive pool and a 25088-4096-4096 classifier."""

    def __init__(self, config: list[int | str], num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_features(config)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always true here (every conv has one); Conv2d types it Optional
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(name: str, num_classes: int) -> VGG:
    return VGG(CONFIGS[name], num_classes=num_classes)


@register("vgg11")
def vgg11(*, num_classes: int = 1000) -> VGG:
    """VGG-11 (configuration A) with BatchNorm."""
    return _vgg("vgg11", num_classes)


@register("vgg13")
def vgg13(*, num_classes: int = 1000) -> VGG:
    """VGG-13 (configuration B) with BatchNorm."""
    return _vgg("vgg13", num_classes)


@register("vgg16")
def vgg16(*, num_classes: int = 1000) -> VGG:
    """VGG-16 (configuration D) with BatchNorm."""
    return _vgg("vgg16", num_classes)


@register("vgg19")
def vgg19(*, num_classes: int = 1000) -> VGG:
    """VGG-19 (configuration E) with BatchNorm."""
    return _vgg("vgg19", num_classes)
