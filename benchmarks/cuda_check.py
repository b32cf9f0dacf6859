"""End-to-end check of the CUDA code paths on the tiny checkpoints (run it on a CUDA machine; no timing).

Generates the same text-to-video and image-to-video clips through the CLI on the CPU and on CUDA in every
memory mode (fp32, so the devices agree to TF32/rounding level), and prints each clip's largest difference
from the CPU clip and from CUDA's "none" mode:

    python benchmarks/cuda_check.py --work /tmp/cuda_check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEVICE = "cuda"
MODES = ["none", "model_offload", "fp8", "block_swap"]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "easyanimate_core", *args], check=True, cwd=Path(__file__).parent.parent)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/cuda_check")
    args = p.parse_args()
    work = Path(args.work)
    model = work / "tiny-inp"
    if not model.exists():
        cli("tiny", "--out", str(model), "--variant", "InP")
    Image.new("RGB", (128, 96), (200, 80, 40)).save(work / "start.png")
    common = ["--model", str(model), "--width", "128", "--height", "96", "--frames", "9", "--steps", "4", "-q"]
    common += ["--dtype", "fp32"]
    jobs = {"t2v": [], "i2v": ["--start-image", str(work / "start.png")]}
    print("| clip | device | mode | max abs diff vs CPU | max abs diff vs CUDA none |")
    print("|---|---|---|---|---|")
    for name, extra in jobs.items():
        clips = {}
        for device, mode in [("cpu", "none")] + [(DEVICE, m) for m in MODES]:
            out = work / f"{name}_{device}_{mode}.npy"
            cli("generate", *common, *extra, "--device", device, "--memory-mode", mode, "--resident-blocks", "1",
                "--out", str(out))  # fmt: skip
            clips[device, mode] = np.load(out)
            vs_cpu = np.abs(clips[device, mode] - clips["cpu", "none"]).max()
            ref = clips.get((DEVICE, "none"))
            vs_none = np.abs(clips[device, mode] - ref).max() if ref is not None else float("nan")
            print(f"| {name} | {device} | {mode} | {vs_cpu:.2e} | {vs_none:.2e} |", flush=True)


if __name__ == "__main__":
    main()
