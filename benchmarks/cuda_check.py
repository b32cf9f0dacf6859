"""End-to-end check of the CUDA code paths on the tiny checkpoints (run it on a CUDA machine; no timing).

Generates the same text-to-video and image-to-video clips through the CLI on the CPU and on CUDA in every
memory mode (fp32, so the devices agree to TF32/rounding level), and prints each clip's largest difference
from the CPU clip and from CUDA's "none" mode. First it checks that CUDA's half-precision LayerNorm equals
float32 LayerNorm rounded once (``ops.LayerNorm`` skips the float32 copy on CUDA because of this):

    python benchmarks/cuda_check.py --work /tmp/cuda_check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DEVICE = "cuda"
MODES = ["none", "model_offload", "fp8", "block_swap"]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "easyanimate_core", *args], check=True, cwd=Path(__file__).parent.parent)


def layer_norm_check() -> None:
    """bf16 LayerNorm on CUDA against float32 LayerNorm rounded to bf16, at the 12B's shapes (x and q/k)."""
    g = torch.Generator("cuda").manual_seed(0)
    for shape in [(2, 29740, 3072), (2, 48, 29484, 64)]:
        x = (torch.randn(shape, generator=g, device="cuda") * 3 + 0.5).bfloat16()
        d = shape[-1]
        for affine in (True, False):
            w = (torch.randn(d, generator=g, device="cuda") * 0.1 + 1).bfloat16() if affine else None
            b = (torch.randn(d, generator=g, device="cuda") * 0.1).bfloat16() if affine else None
            ref = F.layer_norm(
                x.float(), (d,), None if w is None else w.float(), None if b is None else b.float(), 1e-6
            )
            out = F.layer_norm(x, (d,), w, b, 1e-6)
            diff = (out.float() - ref.bfloat16().float()).abs()
            verdict = (
                "equal" if torch.equal(out, ref.bfloat16()) else f"{int((diff > 0).sum())} differ, max {diff.max():.3g}"
            )
            print(f"# LayerNorm bf16 {shape}, affine={affine}: {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/cuda_check")
    args = p.parse_args()
    layer_norm_check()
    work = Path(args.work)
    model = work / "tiny-inp"
    if not model.exists():
        cli("tiny", "--out", str(model), "--variant", "InP")
    Image.new("RGB", (128, 96), (200, 80, 40)).save(work / "start.png")
    common = ["--model", str(model), "--width", "128", "--height", "96", "--frames", "9", "--steps", "4", "-q"]
    common += ["--dtype", "fp32", "--teacache", "0"]  # exact runs: a skip decision must not differ by rounding
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
