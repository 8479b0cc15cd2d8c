"""AlexNet with the original paper's widths (96-256-384-384-256).

torchvision's alexnet follows the one-GPU variant with 64 channels in conv1;
this one keeps Krizhevsky et al.'s widths on purpose, so `cnnprobe compare`
has a real difference to show.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .catalog import register


class AlexNet(nn.Module):
    """Five convolutions with three max-pools, then a 9216-4096-4096 classifier."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register("alexnet")
def alexnet(*, num_classes: int = 1000) -> AlexNet:
    """AlexNet (Krizhevsky et al., 2012) with the paper's 96-channel first layer."""
    return AlexNet(num_classes=num_classes)
