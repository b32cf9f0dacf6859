"""A tiny deterministic LoRA in EasyAnimate's own (kohya-style) format, for the LoRA workflow and tests."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..configs import TransformerConfig

# Layers EasyAnimate's LoRA training targets in every block (attention projections and feed-forward).
TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")


def write_tiny_lora(path: str | Path, config: dict, *, rank: int = 4, alpha: float = 4.0, seed: int = 0) -> Path:
    """Write ``lora_unet__<module>.lora_down/lora_up.weight`` + ``.alpha`` for every block's ``TARGETS``."""
    cfg = TransformerConfig.from_dict(config)
    dim, sd = cfg.inner_dim, {}
    for i in range(cfg.num_layers):
        for target in TARGETS:
            shape_in = 4 * dim if target == "ff.net.2" else dim
            shape_out = 4 * dim if target == "ff.net.0.proj" else dim
            key = "lora_unet__" + f"transformer_blocks.{i}.{target}".replace(".", "_")
            g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, shape_in, generator=g) / shape_in**0.5
            sd[f"{key}.lora_up.weight"] = torch.randn(shape_out, rank, generator=g) * 0.5
            sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
