#!/usr/bin/env bash
# The CUDA checks as one prepared script, for a session lent a GPU (see README, "Reports"). Run from the
# repository root with fvcore and torchinfo installed (carry their wheels where the machine lacks them):
#     bash benchmarks/cuda_all.sh            # about 9 minutes on an H100/H200
# It writes reports/bench-cuda-<gpu>.md, reports/memory-accuracy-cuda-<gpu>.md, reports/ddp-cuda-<gpu>.json,
# reports/profile-cuda-<gpu>.json with its trace (.trace.json) and roofline (.png),
# and runs the tests marked cuda. Each step has its own time limit, so one that hangs cannot eat the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
gpu=$(python -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
timeout 120 python -m pytest -q -p no:cacheprovider -m cuda tests benchmarks || echo "cuda tests: exit $?"
timeout 300 python -m benchmarks.cuda_report --min-time 0.3 || echo "cuda_report: exit $?"
timeout 120 python -m benchmarks.memory_accuracy --device cuda --quick || echo "memory_accuracy: exit $?"
timeout 90 python -m cnnprobe bench resnet18 --device cuda --batch 64 --nproc 1 --min-time 0.5 --json \
    > "reports/ddp-cuda-$gpu.json" || echo "ddp nccl world size 1: exit $?"
timeout 120 python -m cnnprobe profile resnet50 --device cuda --batch 64 --min-time 0.5 --json \
    --trace "reports/profile-cuda-$gpu.trace.json" --plot "reports/profile-cuda-$gpu.png" \
    > "reports/profile-cuda-$gpu.json" || echo "profile: exit $?"
