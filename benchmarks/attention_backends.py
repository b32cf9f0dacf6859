"""Time torch's SDPA kernels (flash, memory-efficient, cuDNN) at the attention shapes of the 12B model.

One joint text+video attention of the 12B transformer with batched CFG: batch 2, 48 heads of 64, and
256 text tokens plus the video tokens of a 49-frame clip (latent frames 13, 2x2 patches). Reports the
median milliseconds of each kernel, its TFLOP/s (4·B·H·L²·D) and its largest difference from the flash
kernel; then the pack's optional backends that are installed (flash-attn, FlashAttention 3, SageAttention)
through ``easyanimate_core.attention.attention``, the call the transformer makes. Run on a CUDA machine:

    python benchmarks/attention_backends.py --size 384x672x49 --size 576x1008x49
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from easyanimate_core.attention import attention, available_backends  # noqa: E402

KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def tokens(size: str) -> int:
    h, w, f = (int(v) for v in size.split("x"))
    return ((f - 1) // 4 + 1) * (h // 16) * (w // 16) + 256


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", action="append", help="HxWxF (repeatable)")
    p.add_argument("--heads", type=int, default=48)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, batch 2, {args.heads} heads x 64")
    print("| size | tokens | kernel | ms | TFLOP/s | max abs diff vs flash |")
    print("|---|---|---|---|---|---|")
    for size in args.size or ["384x672x49"]:
        n = tokens(size)
        g = torch.Generator("cuda").manual_seed(0)
        q, k, v = (
            torch.randn(2, args.heads, n, 64, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3)
        )
        ref = None
        for name, kernel in KERNELS.items():
            try:
                with sdpa_kernel([kernel]):
                    out = F.scaled_dot_product_attention(q, k, v)
                    ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)  # noqa: B023
            except RuntimeError as e:
                print(f"| {size} | {n} | {name} | unavailable: {str(e).splitlines()[0][:80]} | | |")
                continue
            ref = out if ref is None else ref
            diff = (out.float() - ref.float()).abs().max().item()
            tflops = 4 * 2 * args.heads * n * n * 64 / ms / 1e9
            print(f"| {size} | {n} | {name} | {ms:.1f} | {tflops:.0f} | {diff:.2e} |", flush=True)
        with torch.no_grad():
            ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)  # noqa: B023
        print(f"| {size} | {n} | default choice | {ms:.1f} | {4 * 2 * args.heads * n * n * 64 / ms / 1e9:.0f} | |")
        flat_ref = ref.transpose(1, 2).flatten(2)  # the layout the pack's attention() returns
        for backend in available_backends()[1:]:
            out = attention(q, k, v, backend)
            ms = time_ms(lambda: attention(q, k, v, backend), args.repeats)  # noqa: B023
            diff = (out.float() - flat_ref.float()).abs().max().item()
            tflops = 4 * 2 * args.heads * n * n * 64 / ms / 1e9
            print(f"| {size} | {n} | pack backend {backend} | {ms:.1f} | {tflops:.0f} | {diff:.2e} |", flush=True)


if __name__ == "__main__":
    main()
