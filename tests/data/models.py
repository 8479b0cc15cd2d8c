"""Users' own models, as a user's file would hold them; the tests build them by path."""

import torch
from torch import nn


class TypoVGG(nn.Module):
    """The tutorial's VGG head with its typo: Linear(4097, ...) after a 4096-wide layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((7, 7)))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 49, 4096), nn.ReLU(), nn.Linear(4097, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallNet(nn.Module):
    """A grey-image net: its default input channels are read off its first convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def small_net():
    """A factory function, built with no arguments."""
    return SmallNet()


class ReadsValues(nn.Module):
    """Reads a tensor's value, which meta tensors cannot give: runs for real on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.abs().sum().item() > 1e30:
            return x
        return self.fc(self.conv(x).mean((2, 3)))


def needs_arguments(width):
    return SmallNet()


def not_a_module():
    return 42
