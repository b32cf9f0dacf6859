"""The out-of-memory advice's estimates (``memory.sampling_needs``) for the full-size shapes, without weights.

The transformer is built on the meta device with ``gpu_sampler.py``'s presets, so this runs anywhere in a second;
the numbers are what the sampler's out-of-memory error quotes for that model, size and dtype, and what
``gpu_sampler.py`` prints next to each measured peak.

    python benchmarks/vram_estimates.py --preset 12b --size 384x672x49 --size 576x1008x49 --gpu-gib 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpu_sampler import COMMON, PRESETS  # noqa: E402

from easyanimate_core.configs import TransformerConfig  # noqa: E402
from easyanimate_core.memory import MemoryPolicy, readable_size, sampling_needs  # noqa: E402
from easyanimate_core.runner import FIT_SHARE  # noqa: E402
from easyanimate_core.transformer import EasyAnimateTransformer  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="12b", choices=sorted(PRESETS))
    p.add_argument("--size", action="append", help="HxWxF (default: 384x672x49 and 576x1008x49)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--resident-blocks", type=int, default=24, help="the block_swap column's resident blocks")
    p.add_argument("--gpu-gib", type=float, default=24.0, help="the GPU for the last column (GiB)")
    args = p.parse_args(argv)
    dtype = DTYPES[args.dtype]
    with torch.device("meta"):
        model = EasyAnimateTransformer(TransformerConfig.from_dict({**COMMON, **PRESETS[args.preset]})).to(dtype)
    blocks = len(model.transformer_blocks)
    room = int(args.gpu_gib * 2**30 * FIT_SHARE)
    print(f"# preset {args.preset} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters), {args.dtype}")
    print(f"| size | none, model_offload | fp8 | block_swap {args.resident_blocks} resident | block_swap 0 resident "
          f"| most resident blocks within {args.gpu_gib:g} GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for size in args.size or ["384x672x49", "576x1008x49"]:
        h, w, f = (int(v) for v in size.split("x"))
        needs = sampling_needs(model, MemoryPolicy(), (1, 16, (f - 1) // 4 + 1, h // 8, w // 8), dtype)
        most = needs.resident_blocks_within(room)
        cells = [needs.mode("none"), needs.mode("fp8"), needs.mode("block_swap", args.resident_blocks)]
        cells += [needs.mode("block_swap", 0)]
        print(f"| {size} | " + " | ".join(map(readable_size, cells)) + f" | {'none fit' if most is None else f'{most} of {blocks}'} |")  # fmt: skip


if __name__ == "__main__":
    main()
