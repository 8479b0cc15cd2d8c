"""LeNet-5 for 28×28 grey images (MNIST): 28 → 14 → 5."""

from __future__ import annotations

from torch import Tensor, nn

from .catalog import register


class LeNet(nn.Module):
    """Two 5×5 convolutions with average pooling, then three fully connected layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # 1×28×28 -> 6×28×28
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),  # -> 6×14×14
            nn.Conv2d(6, 16, kernel_size=5),  # -> 16×10×10
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),  # -> 16×5×5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # -> 400
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register("lenet", input_shape=(1, 28, 28), num_classes=10)
def lenet(*, num_classes: int = 10) -> LeNet:
    """LeNet-5 (LeCun et al., 1998), 61,706 parameters for 10 classes."""
    return LeNet(num_classes=num_classes)
