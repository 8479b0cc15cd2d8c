"""Write a training checkpoint as a training loop saves one: LeNet after three epochs with Adam on random
data, the usual keys (epoch, model_state_dict, optimizer_state_dict, loss), in run/checkpoint.pth. The
README's `cnnprobe checkpoint` example and its Python API block read this file.

    python tests/examples/checkpoint.py [PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import cnnprobe


def main(path: str = "run/checkpoint.pth") -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread, so the loss is the same number on every machine
    model = cnnprobe.build_model("lenet", device="cpu").module
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    for _ in range(3):
        for x, y in zip(images.split(16), labels.split(16)):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "loss": round(loss.item(), 4)}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
