"""Files a careless tool or a hostile author makes, written into a folder the test owns."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

MARKER_NAME = "PWNED"


def lenet_state() -> dict[str, torch.Tensor]:
    from cnnprobe.models.build import build_model

    torch.manual_seed(0)
    return build_model("lenet", device="cpu").module.state_dict()


class RunsCode:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def protocol_files(folder: Path) -> dict[str, Path]:
    """Ordinary files in every pickle protocol and both container formats."""
    state = lenet_state()
    out = {}
    for proto in (2, 3, 4, 5):
        for zipped in (True, False):
            path = folder / f"p{proto}{'' if zipped else '_legacy'}.pth"
            torch.save(state, path, pickle_protocol=proto, _use_new_zipfile_serialization=zipped)
            out[path.stem] = path
    training = {"epoch": 3, "model_state_dict": state, "loss": 0.5,
                "optimizer_state_dict": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(6)}},
                                         "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}}
    path = folder / "training_p4.pth"
    torch.save(training, path, pickle_protocol=4)
    out["training_p4"] = path
    return out


def code_running(folder: Path) -> dict[str, Path]:
    """Pickles that would run a command when loaded: protocol 0 (text), 2 and 4 (STACK_GLOBAL)."""
    marker = folder / MARKER_NAME
    out = {}
    for proto in (0, 2, 4):
        path = folder / f"runs_code_p{proto}.pth"
        path.write_bytes(pickle.dumps(RunsCode(marker), protocol=proto))
        out[f"p{proto}"] = path
    path = folder / "runs_code_zip_p4.pth"
    torch.save({"weights": lenet_state(), "payload": RunsCode(marker)}, path, pickle_protocol=4)
    out["zip_p4"] = path
    return out


def zip_bomb(folder: Path, inflated: int = 1 << 30) -> Path:
    """A small .pth whose pickle member declares `inflated` bytes of zeros (1 GiB by default)."""
    path = folder / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 24)
            for _ in range(inflated // len(block)):
                member.write(block)
        z.writestr("archive/version", "3\n")
    return path


def training_checkpoint(folder: Path, name: str, **fields) -> Path:
    """A training checkpoint of LeNet with some fields replaced (a loss of NaN, a malformed optimizer...)."""
    data = {"epoch": 1, "model_state_dict": lenet_state(), "loss": 0.25,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}}
    data.update(fields)
    path = folder / f"{name}.pth"
    torch.save(data, path)
    return path


def meta_weights(folder: Path) -> Path:
    path = folder / "meta.pth"
    torch.save({k: torch.empty_like(v, device="meta") for k, v in lenet_state().items()}, path)
    return path


def corrupt(folder: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(lenet_state(), buffer)
    path = folder / "truncated.pth"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path
