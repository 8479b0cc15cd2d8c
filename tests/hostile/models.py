"""Users' models that bring the cases a careful user brings: lazy layers, other inputs, shared and scripted
modules, models that print, read values, or exit."""

import sys

import torch
from torch import nn


class Lazy(nn.Module):
    """Lazy layers: their shapes come from the first input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.LazyLinear(10)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(2))


class Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3, 4)))


class TextCNN(nn.Module):
    """Token ids in: an embedding first."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.conv = nn.Conv1d(8, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        return self.fc(self.conv(self.embed(ids).transpose(1, 2)).amax(2))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(10, 4)
        self.b = nn.Linear(6, 4)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class StatesItsInput(TwoInputs):
    @staticmethod
    def example_input():
        return torch.zeros(2, 10), torch.zeros(2, 6)


class Block(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = act

    def forward(self, x):
        return self.act(self.conv(x))


class SharedReLU(nn.Module):
    """The same ReLU instance in two blocks of a ModuleList."""

    def __init__(self):
        super().__init__()
        relu = nn.ReLU()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.ModuleList([Block(relu), Block(relu)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


class Recursive(nn.Module):
    """One convolution applied three times."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        for _ in range(3):
            x = self.conv(x)
        return self.head(x.mean((2, 3)))


class Scripted(nn.Module):
    """A TorchScript submodule inside an eager model."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = torch.jit.script(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class Chatty(nn.Module):
    """Prints on every forward pass."""

    def __init__(self):
        super().__init__()
        print("building Chatty")
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        print("forward of Chatty", tuple(x.shape))
        return self.fc(x.flatten(1)[:, :4])


class ExitsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        sys.exit(4)


def exits_when_built():
    sys.exit(5)


class NoParameters(nn.Module):
    def forward(self, x):
        return x.relu()


class FailsOnRankOne(nn.Module):
    """Fine on rank 0; rank 1's forward raises, as a bad shard or a broken GPU would."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        import os

        if os.environ.get("RANK") == "1":
            raise ValueError("rank one is broken")
        return self.fc(x.flatten(1)[:, :4])


class LazyFlat(nn.Module):
    """Lazy layers whose size depends on the input's sides: a flatten, no pooling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(8, 3)
        self.fc = nn.LazyLinear(10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Small(nn.Module):
    """A conv and a linear, fed 3×16×16 by the example input its subclasses state in one way each."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)
        self.side = 16

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


class ExampleMethod(Small):
    def example_input(self):  # an instance method: needs the instance
        return torch.zeros(2, 3, self.side, self.side, device=self.conv.weight.device)


class ExampleClassmethod(Small):
    @classmethod
    def example_input(cls):
        return torch.zeros(2, 3, 16, 16)


class ExampleProperty(Small):
    @property
    def example_input(self):
        return torch.zeros(2, 3, self.side, self.side)


class ExampleAttribute(Small):
    example_input = torch.zeros(2, 3, 16, 16)


def example_factory():
    return Small()


example_factory.example_input = lambda: torch.zeros(2, 3, 16, 16)


class ExampleFails(Small):
    def example_input(self):
        raise RuntimeError("no data here")


class ExampleComplex(Small):
    example_input = torch.zeros(2, 3, 16, 16, dtype=torch.complex64)


class LazyReadsValues(nn.Module):
    """Lazy layers in a forward pass that reads a value, which meta tensors cannot give."""

    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        y = self.conv(x)
        if y.abs().sum().item() < 0:  # never, but it must be read
            return y
        return self.fc(y.flatten(1))


class UnusedLayer(nn.Module):
    """A trainable layer the forward pass never calls: DDP cannot finish its reduction without help."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.spare = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :4])


class IgnoredByDDP(nn.Module):
    """A layer DDP is told to leave alone: each rank keeps its own gradients for it, which then differ."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self._ddp_params_and_buffers_to_ignore = ["head.weight", "head.bias"]

    def forward(self, x):
        return self.head(self.fc(x.flatten(1)[:, :4]))
