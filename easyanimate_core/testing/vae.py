"""Tiny deterministic MagViT VAE for tests and the demo, in both on-disk layouts.

Same layer types as the real V5.1 VAE (4 down and 4 up blocks, 8x spatial and 4x temporal
compression, 16 latent channels, 2 layers per block, per-frame group norm), with 8-16 channels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..vae import MagvitVAE

_DOWN = ["SpatialDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D"]
_UP = ["SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"]
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def tiny_vae_config(spatial_group_norm: bool = True) -> dict:
    """A diffusers-format ``vae/config.json`` (the keys ``AutoencoderKLMagvit`` registers)."""
    return {
        "_class_name": "AutoencoderKLMagvit",
        "_diffusers_version": "0.32.0",
        "in_channels": 3,
        "latent_channels": 16,
        "out_channels": 3,
        "block_out_channels": [8, 16, 16, 16],
        "down_block_types": list(_DOWN),
        "up_block_types": list(_UP),
        "layers_per_block": 2,
        "act_fn": "silu",
        "norm_num_groups": 4,
        "scaling_factor": 0.7125,
        "spatial_group_norm": spatial_group_norm,
    }


def tiny_vae_config_original(spatial_group_norm: bool = True) -> dict:
    """The same VAE as an original EasyAnimate V5/V5.1 ``vae/config.json``: the keys the original
    ``AutoencoderKLMagvit`` registers, with the V5.x values (no mid-block attention, the
    ``cache_mag_vae`` frame schedule, mini-batches of 4 pixel / 1 latent frames)."""
    return {
        "_class_name": "AutoencoderKLMagvit",
        "_diffusers_version": "0.30.1",
        "in_channels": 3,
        "out_channels": 3,
        "ch": 8,
        "ch_mult": [1, 2, 2, 2],
        "block_out_channels": [8, 16, 16, 16],
        "use_gc_blocks": None,
        "down_block_types": list(_DOWN),
        "up_block_types": list(_UP),
        "mid_block_type": "MidBlock3D",
        "mid_block_use_attention": False,
        "mid_block_attention_type": "spatial",
        "mid_block_num_attention_heads": 1,
        "layers_per_block": 2,
        "act_fn": "silu",
        "num_attention_heads": 1,
        "latent_channels": 16,
        "norm_num_groups": 4,
        "scaling_factor": 0.7125,
        "force_upcast": True,
        "slice_mag_vae": False,
        "slice_compression_vae": False,
        "cache_compression_vae": False,
        "cache_mag_vae": True,
        "use_tiling": False,
        "use_tiling_encoder": False,
        "use_tiling_decoder": False,
        "mini_batch_encoder": 4,
        "mini_batch_decoder": 1,
        "upcast_vae": False,
        "spatial_group_norm": spatial_group_norm,
        "tile_sample_min_size": 384,
        "tile_overlap_factor": 0.25,
    }


def make_tiny_vae_state_dict(seed: int = 0, config: dict | None = None) -> dict[str, torch.Tensor]:
    """Deterministic fp32 weights for ``config`` (default ``tiny_vae_config()``), about 1.3 MB.

    Conv weights ~ N(0, 1/fan_in) so activations keep their scale through the network; norm scales
    near 1 and biases near 0, so every parameter matters."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MagvitVAE.from_config(config or tiny_vae_config()).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape = shapes[key]
        noise = torch.randn(shape, generator=gen)
        if len(shape) > 1:  # conv weight [out, in, *kernel]
            sd[key] = noise / math.sqrt(math.prod(shape[1:]))
        elif "norm" in key.rsplit(".", 2)[-2] and key.endswith(".weight"):
            sd[key] = 1.0 + 0.1 * noise
        else:
            sd[key] = 0.05 * noise
    return sd


def write_tiny_vae(
    folder: str | Path, layout: str = "diffusers", seed: int = 0, spatial_group_norm: bool = True
) -> Path:
    """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` into ``folder`` (the ``vae/``
    folder of a whole checkpoint), as the published ``layout`` ("diffusers" or "original") has them.
    Both layouts use the same parameter names; only config.json differs."""
    if layout == "diffusers":
        config = tiny_vae_config(spatial_group_norm)
    elif layout == "original":
        config = tiny_vae_config_original(spatial_group_norm)
    else:
        raise ValueError(f"layout must be 'diffusers' or 'original', got {layout!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    sd = make_tiny_vae_state_dict(seed, tiny_vae_config(spatial_group_norm))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder
