"""Gradients across ranks: whether every rank holds the same after a synchronised step, and which trainable
parameters get none (DDP fails on them with a message that names none)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ...core.enums import Mode
from ...training.setup import BenchSetup
from ...training.steps import STEPS


def gradient_checksum(module: torch.nn.Module) -> torch.Tensor:
    """Every gradient reduced to two float64 numbers (sum and a position-weighted sum): equal gradients
    give equal checksums, bit for bit."""
    parts = [c for _, c in parameter_checksums(module)]
    return torch.cat(parts) if parts else torch.zeros(2, dtype=torch.float64)


def parameter_checksums(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, two float64 numbers) for each parameter with a gradient."""
    out = []
    for name, p in module.named_parameters():
        if p.grad is not None:
            g = p.grad.detach().double().flatten()
            weights = torch.arange(1, g.numel() + 1, dtype=torch.float64, device=g.device)
            out.append((name, torch.stack([g.sum(), (g * weights).sum()]).cpu()))
    return out


def differing_gradients(setup: BenchSetup, world: int) -> list[str]:
    """After one synchronised step, the parameters whose gradients differ between ranks (compared by checksum
    on every rank): empty when the all-reduce did its work."""
    assert setup.raw is not None
    STEPS[Mode.FORWARD_BACKWARD](setup, setup.config.freezing).step()()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, parameter_checksums(setup.raw))
    return sorted({name for other in gathered for (name, c), (_, c0) in zip(other, gathered[0], strict=False)
                   if not torch.equal(c, c0)} | ({"(the parameters with gradients differ)"}
                                                 if len({len(g) for g in gathered}) > 1 else set()))


def unused_parameters(setup: BenchSetup) -> list[str]:
    """Trainable parameters that get no gradient from one forward-backward of the plain model (before DDP, which
    would fail on them with a message that names none)."""
    assert setup.raw is not None
    STEPS[Mode.FORWARD_BACKWARD](setup, setup.config.freezing).step()()
    unused = [n for n, p in setup.raw.named_parameters() if p.requires_grad and p.grad is None]
    setup.raw.zero_grad(set_to_none=True)
    return unused
