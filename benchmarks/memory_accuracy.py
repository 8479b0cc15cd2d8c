"""Regenerate reports/memory-accuracy.md: `cnnprobe memory`'s predictions against measured steps.

    python -m benchmarks.memory_accuracy                 # the CPU table, about ten minutes on 2 cores
    python -m benchmarks.memory_accuracy --quick         # three models, for a smoke test

For each model, everything trainable and with a freezing recipe, at two batch
sizes: a train_step with Adam, measured for real on the CPU and predicted on
fake tensors; then the forward and fwd+bwd cases issue 16 found furthest off.
The reference is the CPU allocator's own peak over a steady-state step run with
no dispatch mode (torch.profiler's memory events, above what is live when the
step starts); the storage-by-storage count of the same step is beside it, as
is the prediction's own tensor-level figure. Beside them, what the peers say of the same step: torchinfo's
"Estimated Total Size" (inputs, twice every layer's output, parameters) and
torch's MemTracker, which runs only with everything trainable and only over a
first step (it hooks every parameter's gradient and refuses a second
iteration). On a machine with CUDA, `--device cuda` measures against
`max_memory_allocated` and writes reports/memory-accuracy-cuda-<gpu>.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import time
from pathlib import Path
from typing import Any

from cnnprobe.core.enums import MemoryCategory

REPORTS = Path(__file__).resolve().parent.parent / "reports"
CATEGORIES = MemoryCategory.tensors()
# model: (input size or None for the model's own, two batch sizes, the freezing recipe: freeze all except these)
CASES: dict[str, tuple[str | None, tuple[int, int], str]] = {
    "lenet": (None, (8, 32), "classifier.5"),
    "cnnprobe:vgg11": ("3,64,64", (2, 4), "classifier"),
    "cnnprobe:resnet18": ("3,112,112", (2, 4), "layer4,fc"),
    "resnet50": (None, (2, 4), "layer4,fc"),
    "mobilenet_v3_small": (None, (2, 8), "features.12,classifier"),
    "efficientnet_b0": (None, (2, 4), "features.8,classifier"),
    "convnext_tiny": (None, (2, 4), "features.7,classifier"),
    "regnet_y_400mf": (None, (2, 4), "trunk_output.block4,fc"),
    "densenet121": (None, (2, 4), "features.denseblock4,features.norm5,classifier"),
    "vit_b_16": (None, (2, 4), "encoder.layers.encoder_layer_11,encoder.ln,heads"),
    "swin_t": (None, (2, 4), "features.7,norm,head"),
    "inception_v3": (None, (2, 4), "Mixed_7c,fc"),
}
QUICK = ("lenet", "cnnprobe:resnet18", "mobilenet_v3_small")
# Issue 16's cases, furthest off before operators' workspaces were predicted:
# (model, input, batch, mode, freeze all except, optimizer)
EXTRA: list[tuple[str, str | None, int, str, str | None, str]] = [
    ("convnext_tiny", None, 2, "forward_backward", "features.6,features.7,classifier", "sgd"),
    ("convnext_tiny", None, 2, "forward_backward", None, "sgd"),
    ("densenet121", None, 2, "forward", None, "sgd"),
    ("densenet121", None, 2, "forward_backward", "features.denseblock4,features.norm5,classifier", "sgd"),
    ("efficientnet_b0", None, 2, "forward", None, "sgd"),
    ("resnet50", None, 2, "forward_backward", "layer4,fc", "sgd"),
    ("resnet18", None, 4, "forward_backward", "layer4,fc", "sgd"),
]


def measure(name: str, batch: int, config: Any) -> Any:
    """A real step's steady-state peak: two steps, then the allocator's peak over one more (plus what is
    live when it starts), and a third counted storage by storage."""
    import torch

    from cnnprobe.benchmark.runners import RUNNERS, BenchSetup
    from cnnprobe.core.enums import Mode
    from cnnprobe.memory import allocator_peak
    from cnnprobe.memory.allocator import live_bytes, step_peak

    mode = config.modes[-1]
    setup = BenchSetup(name, batch, config).build()
    setup.set_frozen(config.freezing)
    runner = RUNNERS[mode](setup, config.freezing and mode is not Mode.FORWARD)
    fn = runner.step()
    fn()
    fn()
    if setup.device == "cuda":
        peak = allocator_peak(fn, setup.device)
    else:
        peak = live_bytes(t for ts in runner.held().values() for t in ts) + step_peak(fn).peak_bytes
    counted = runner.count_memory(fn, by_module=True)
    setup.close()
    del runner, fn
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return peak, counted, sum(counted.saved_by_module.values())


def torchinfo_estimate(name: str, batch: int, input_size: str | None) -> int:
    """torchinfo's "Estimated Total Size" of the same model and input: inputs, twice every layer's output
    (its "forward/backward pass size"), and parameters."""
    import torchinfo

    from cnnprobe.models.build import build_model

    built = build_model(name, input_size=input_size)
    stats = torchinfo.summary(built.module, input_data=list(built.example_inputs(batch)), verbose=0, mode="train",
                              device="meta")
    return int(stats.total_input + stats.total_output_bytes + stats.total_param_bytes)


def memtracker_first_step(name: str, batch: int, input_size: str | None, device: str) -> int | None:
    """torch's MemTracker over a first train_step with everything trainable (all it supports), or None."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    import torch

    from cnnprobe.models.build import build_model
    from cnnprobe.training.recipe import training_loss

    built = build_model(name, input_size=input_size, device=device)
    model = built.module.train()
    xs = built.example_inputs(batch, random=True)
    target = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tracker = MemTracker()
    tracker.track_external(model, optimizer, *xs, target)
    try:
        with tracker:
            training_loss(model(*xs), target).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return int(tracker.get_tracker_snapshot("peak")[torch.device(device)]["Total"])
    except Exception:  # noqa: BLE001 - a peer that does not run here is reported as such
        return None


def row(name: str, input_size: str | None, batch: int, mode: str, recipe: str | None, optimizer: str,
        device: str, predictor: Any = None) -> dict[str, Any]:
    from cnnprobe.core.enums import Mode
    from cnnprobe.memory.predict import Predictor
    from cnnprobe.training.config import BenchConfig

    config = BenchConfig(device=device, mode=mode, optimizer=optimizer, input_size=input_size, freeze_except=recipe)
    predictor = predictor or Predictor(name, config)
    start = time.perf_counter()
    predicted = predictor.at(batch, [Mode(mode)], compare_freezing=False).results[0]
    seconds = time.perf_counter() - start
    measured, counted, saved = measure(name, batch, config)
    breakdown = counted.breakdown
    out = {"model": name, "input": input_size or "default", "batch": batch, "mode": mode, "optimizer": optimizer,
           "frozen": recipe is not None, "recipe": recipe or "all trainable", "measured": measured,
           "tensors": counted.peak_bytes, "predicted": predicted.predicted_peak_bytes,
           "predicted_tensors": predicted.tensor_peak_bytes, "error": predicted.predicted_peak_bytes / measured - 1,
           "measured_breakdown": breakdown, "predicted_breakdown": predicted.breakdown,
           "category_error": max((abs(predicted.breakdown[c] - breakdown[c]) / breakdown[c]
                                  for c in CATEGORIES if breakdown[c]), default=0.0),
           "torchinfo": torchinfo_estimate(name, batch, input_size),
           "memtracker": memtracker_first_step(name, batch, input_size, device)
           if recipe is None and mode == "train_step" else None,
           "predict_seconds": seconds, "saved": saved, "predicted_saved": sum(predicted.saved_by_module.values())}
    print(f"  {name} b{batch} {mode} {out['recipe']}: allocator {measured / 2**20:.1f} MiB, tensors "
          f"{counted.peak_bytes / 2**20:.1f} MiB, predicted {out['predicted'] / 2**20:.1f} MiB "
          f"({100 * out['error']:+.2f}%) in {seconds:.1f} s", flush=True)
    return out


def rows(models: list[str], device: str, extra: bool = True, path: Path | None = None,
         extra_first: bool = False) -> list[dict[str, Any]]:
    """Every row, the report rewritten after each (a run cut short keeps what it measured)."""
    out: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        out.append(r)
        if path is not None:
            write(out, device, path)

    def issue_cases() -> None:
        for case in EXTRA if extra else []:
            done(row(*case, device))

    from cnnprobe.memory.predict import Predictor
    from cnnprobe.training.config import BenchConfig

    if extra_first:
        issue_cases()
    for name in models:
        input_size, batches, recipe = CASES[name]
        for frozen in (False, True):
            config = BenchConfig(device=device, mode="train_step", optimizer="adam", input_size=input_size,
                                 freeze_except=recipe if frozen else None)
            predictor = Predictor(name, config)
            for batch in batches:
                done(row(name, input_size, batch, "train_step", recipe if frozen else None, "adam", device,
                         predictor))
    if not extra_first:
        issue_cases()
    return out


def write(data: list[dict[str, Any]], device: str, path: Path) -> None:
    import torch
    import torchvision

    from cnnprobe.core.formatting import nbytes
    from cnnprobe.report.files import write_atomic
    from cnnprobe.training.devices import device_name

    worst = max(data, key=lambda r: abs(r["error"]))
    worst_category = max(data, key=lambda r: r["category_error"])
    within = sum(abs(r["error"]) <= 0.03 for r in data)
    saving = [(r, f) for r in data if r["frozen"] and r["mode"] == "train_step"
              for f in data if f["model"] == r["model"] and f["batch"] == r["batch"] and not f["frozen"]
              and f["mode"] == "train_step"]
    lines = [
        f"# Memory predictions against measurement ({device})",
        "",
        f"`python -m benchmarks.memory_accuracy{' --device cuda' if device == 'cuda' else ''}` on "
        f"{datetime.date.today().isoformat()}: {device_name(device)}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, Python {platform.python_version()}, {torch.get_num_threads()} threads.",
        "",
        "Rows are a train_step with Adam, then issue 16's forward and fwd+bwd cases (SGD). **allocator**: the step "
        "run for real, twice, then the allocator's peak over a third with no dispatch mode active ("
        + ("torch.profiler's CPU memory events, above what is live when the step starts" if device == "cpu"
           else "`max_memory_allocated`")
        + "): the steady state, gradients and optimizer state made. **predicted**: `cnnprobe memory` on fake "
        "tensors, each operator's workspace (calibrated once per call shape) added while it runs. **tensors "
        "counted / predicted**: the storage-by-storage count of the same real step, and the prediction's "
        "before workspaces: what both used to report. **torchinfo**: its \"Estimated Total Size\" for the same "
        "input (it sees neither gradients, optimizer state nor freezing). **MemTracker**: torch's own tracker "
        "over a first train_step, where it runs (it refuses frozen parameters and second steps).",
        "",
        f"- {len(data)} predictions, {within} within 3% of the allocator's peak; the largest difference is "
        f"{100 * worst['error']:+.2f}% ({worst['model']} b{worst['batch']} {worst['mode']}, {worst['recipe']}); "
        f"the largest in any category of the tensor breakdown {100 * worst_category['category_error']:.2f}% "
        f"({worst_category['model']} b{worst_category['batch']}).",
        f"- The tensor count alone is below the allocator by up to "
        f"{100 * max(1 - r['tensors'] / r['measured'] for r in data):.1f}%: operators' internal allocations.",
    ]
    if saving:
        lines.append(f"- Freezing: the recipes save between {min(1 - r['measured'] / f['measured'] for r, f in saving):.0%}"
                     f" and {max(1 - r['measured'] / f['measured'] for r, f in saving):.0%} of the measured peak, and "
                     "the predictions follow: the saved-for-backward column shows the frozen prefix saving nothing.")
    lines += [
        f"- Predicting took {max(r['predict_seconds'] for r in data):.1f} s at most (calibration included, "
        "cached after).",
        "",
        "| model | input | batch | mode | trainable | allocator | predicted | error | tensors counted / predicted | "
        "saved for backward measured / predicted | torchinfo | MemTracker (first step) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data:
        tracker = nbytes(r["memtracker"]) if r["memtracker"] else "does not run" if r["frozen"] else "-"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['batch']} | {r['mode']} | {r['recipe']} | {nbytes(r['measured'])} | "
            f"{nbytes(r['predicted'])} | {100 * r['error']:+.2f}% | {nbytes(r['tensors'])} / "
            f"{nbytes(r['predicted_tensors'] or 0)} | {nbytes(r['saved'])} / {nbytes(r['predicted_saved'])} | "
            f"{nbytes(r['torchinfo'])} | {tracker} |")
    write_atomic(path, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--extra-first", action="store_true", help="issue 16's cases before the train_step table")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    models = list(QUICK if args.quick else CASES)
    if args.device == "cuda":
        import torch

        slug = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
        path = REPORTS / f"memory-accuracy-cuda-{slug}.md"
    else:
        path = REPORTS / "memory-accuracy.md"
    rows(models, args.device, extra=not args.quick, path=path, extra_first=args.extra_first)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
