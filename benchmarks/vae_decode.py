"""VAE decode speed and peak memory, ours against diffusers' AutoencoderKLMagvit, on the same random weights.

The full-size EasyAnimate V5/V5.1 MagViT VAE (128-256-512-512 channels, 16 latent channels) with random
weights; both decode the same latents. Seconds are the median of ``--repeats`` decodes, timed alternately in
one process; peak memory is that of a fresh child process per implementation (peak RSS on the CPU, peak
allocated VRAM on CUDA). ``--tile`` decodes both in 256-pixel tiles with a 192-pixel stride (diffusers'
``enable_tiling`` with the same numbers); the maximum difference is always ours against diffusers.

    python benchmarks/vae_decode.py --size 128x128x9                      # CPU box
    python benchmarks/vae_decode.py --size 576x1008x49 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easyanimate_core.testing.vae import make_tiny_vae_state_dict, tiny_vae_config  # noqa: E402
from easyanimate_core.vae import MagvitVAE, VAETiling  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TILE = VAETiling(tile_size=256, overlap=0.25)


def full_config() -> dict:
    return {**tiny_vae_config(), "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32}


def build(impl: str, device: torch.device, dtype: torch.dtype):
    sd = make_tiny_vae_state_dict(seed=0, config=full_config())  # N(0, 1/fan_in) convs: activations keep scale
    if impl == "ours":
        with torch.device("meta"):
            vae = MagvitVAE.from_config(full_config())
    else:
        from diffusers import AutoencoderKLMagvit

        kw = {k: v for k, v in full_config().items() if not k.startswith("_")}
        with torch.device("meta"):
            vae = AutoencoderKLMagvit(**kw)
    vae.load_state_dict(sd, assign=True)
    return vae.to(device, dtype).eval().requires_grad_(False)


def decode(impl: str, vae, z: torch.Tensor, tile: bool) -> torch.Tensor:
    if impl == "ours":
        return vae.decode(z, tile=TILE if tile else None)
    if tile:
        size, stride = TILE.sizes(8)
        vae.enable_tiling(
            tile_sample_min_height=size,
            tile_sample_min_width=size,
            tile_sample_stride_height=stride,
            tile_sample_stride_width=stride,
        )
    else:
        vae.disable_tiling()
    return vae.decode(z).sample


def latents(size: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    h, w, f = (int(v) for v in size.split("x"))
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, generator=g).to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(args, device: torch.device, dtype: torch.dtype) -> None:
    vae = build(args.child, device, dtype)
    z = latents(args.size, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        decode(args.child, vae, z, args.tile)
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"peak_gib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="128x128x9", help="HxWxF of the decoded video")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tile", action="store_true", help="tiled decoding (256-pixel tiles, 1/4 overlap)")
    p.add_argument("--child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = p.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.child:
        return child(args, device, dtype)

    vaes = {impl: build(impl, device, dtype) for impl in ("ours", "diffusers")}
    z = latents(args.size, device, dtype)
    times: dict[str, list[float]] = {impl: [] for impl in vaes}
    with torch.inference_mode():
        outs = {impl: decode(impl, vae, z, args.tile).float().cpu() for impl, vae in vaes.items()}
        for _ in range(args.repeats):
            for impl, vae in vaes.items():
                sync(device)
                start = time.perf_counter()
                decode(impl, vae, z, args.tile)
                sync(device)
                times[impl].append(time.perf_counter() - start)
    diff = (outs["ours"] - outs["diffusers"]).abs().max().item()
    del vaes, outs
    peaks = {}
    for impl in ("ours", "diffusers"):
        cmd = [sys.executable, __file__, "--child", impl, "--size", args.size, "--device", args.device]
        cmd += ["--dtype", args.dtype] + (["--tile"] if args.tile else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[impl] = json.loads(out.strip().splitlines()[-1])["peak_gib"]
    med = {impl: statistics.median(v) for impl, v in times.items()}
    # the median of the per-round ratios: robust to the slow drifts of a shared machine
    ratio = statistics.median(d / o for o, d in zip(times["ours"], times["diffusers"]))
    unit = "VRAM" if device.type == "cuda" else "RSS"
    print(f"# full-size MagViT VAE decode, {args.size}, {args.dtype}, {args.device}{', tiled' if args.tile else ''}")
    print(
        f"ours {med['ours']:.2f} s, diffusers {med['diffusers']:.2f} s (x{ratio:.2f}, median of {args.repeats} rounds); "
        f"peak {unit} ours {peaks['ours']:.2f} GiB, diffusers {peaks['diffusers']:.2f} GiB; max |diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
