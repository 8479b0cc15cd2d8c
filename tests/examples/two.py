"""A model with two inputs, an image and a vector of 10 features, in forward's order: the README's tour.

    cnnprobe flops tests/examples/two.py:Net --input-size 3,224,224 --input-size 10
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.features = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.classifier = nn.Linear(32 + 32, num_classes)

    def forward(self, image, features):
        return self.classifier(torch.cat([self.image(image), self.features(features)], dim=1))
