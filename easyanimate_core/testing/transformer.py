"""Tiny deterministic EasyAnimate transformers for every variant, in the original and diffusers layouts."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..configs import CAMERA_CHANNELS, TransformerConfig, Variant
from ..keys import transformer_to_diffusers
from ..transformer import EasyAnimateTransformer

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
LATENT_CHANNELS = 16
# Keys diffusers' EasyAnimateTransformer3DModel accepts (the rest are original-only pipeline flags).
_DIFFUSERS_KEYS = {
    "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size", "sample_width",
    "sample_height", "freq_shift", "num_layers", "mmdit_layers", "time_embed_dim", "add_norm_text_encoder",
    "text_embed_dim", "text_embed_dim_t5", "norm_eps", "norm_elementwise_affine", "flip_sin_to_cos", "after_norm",
    "resize_inpaint_mask_directly", "enable_text_attention_mask", "add_noise_in_inpaint_model",
}  # fmt: skip


def in_channels_for(variant: Variant, version: str, c: int = LATENT_CHANNELS) -> int:
    """The patch-embedding input width of a variant (what the published checkpoints have)."""
    ref = c if version == "V5.1" else 0  # V5.1 control models also take ref-image latents
    return {
        Variant.T2V: c,
        Variant.INP: 2 * c + 1,
        Variant.CONTROL: 2 * c + ref,
        Variant.CAMERA: c + CAMERA_CHANNELS + ref,
    }[variant]


def check_version_variant(version: str, variant: Variant | str) -> None:
    """ValueError unless EasyAnimate publishes ``variant`` checkpoints for ``version`` (checked before writing)."""
    if version not in ("V5", "V5.1"):
        raise ValueError(f"version must be 'V5' or 'V5.1', got {version!r}")
    if Variant(variant) == Variant.CAMERA and version == "V5":
        raise ValueError("Control-Camera checkpoints exist for V5.1 only")


def tiny_transformer_config(
    variant: Variant = Variant.T2V, version: str = "V5.1", text_dim: int = 32, text_dim_t5: int | None = None
) -> dict:
    """An original-layout ``transformer/config.json`` for a 2-layer, 32-wide model of ``variant``."""
    check_version_variant(version, variant)
    cfg = {
        "_class_name": "EasyAnimateTransformer3DModel",
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": in_channels_for(Variant(variant), version),
        "out_channels": LATENT_CHANNELS,
        "patch_size": 2,
        "sample_width": 90,
        "sample_height": 60,
        "time_embed_dim": 32,
        "num_layers": 2,
        "mmdit_layers": 2,
        "text_embed_dim": text_dim,
        "text_embed_dim_t5": text_dim_t5 if version == "V5" else None,
        "add_norm_text_encoder": version == "V5.1",
        "after_norm": False,
        "time_position_encoding_type": "3d_rope",
        "resize_inpaint_mask_directly": True,
        "enable_text_attention_mask": version == "V5.1",
        "add_noise_in_inpaint_model": True,
        "add_ref_latent_in_control_model": version == "V5.1" and variant in (Variant.CONTROL, Variant.CAMERA),
    }
    if version == "V5" and text_dim_t5 is None:
        raise ValueError("a V5 transformer needs text_dim_t5 (the T5 encoder's width)")
    return cfg


def tiny_transformer_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights: each tensor from a generator seeded by ``seed`` and the tensor's name."""
    model = EasyAnimateTransformer(TransformerConfig.from_dict(config))
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        if name.endswith("norm.weight") or ".norm_" in name or name.endswith("norm3.weight") or "text_proj.0" in name:
            sd[name] = 1 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p[0].numel() if p.ndim > 1 else 16
            sd[name] = torch.randn(p.shape, generator=g) / fan_in**0.5
    return sd


def write_tiny_transformer(
    folder: str | Path,
    config: dict,
    *,
    layout: str = "original",
    seed: int = 0,
    shards: int = 1,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``config.json`` and the weights (``shards`` > 1: sharded with an index json) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.to(dtype) for k, v in tiny_transformer_state_dict(config, seed).items()}
    if layout == "diffusers":
        sd = transformer_to_diffusers(sd)
        config = {k: v for k, v in config.items() if k in _DIFFUSERS_KEYS} | {
            "_class_name": "EasyAnimateTransformer3DModel",
            "_diffusers_version": "0.32.2",
        }
    elif layout != "original":
        raise ValueError(f"layout must be 'original' or 'diffusers', got {layout!r}")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    keys = sorted(sd)
    if shards <= 1:
        save_file({k: sd[k] for k in keys}, str(folder / WEIGHTS_NAME))
        return folder
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    index = {
        "metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
        "weight_map": weight_map,
    }
    (folder / f"{WEIGHTS_NAME}.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return folder


def write_single_file(path: str | Path, config: dict, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A single ``.safetensors`` transformer (no config), as shared on model sites; fp8 allowed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = tiny_transformer_state_dict(config, seed)
    if dtype == torch.float8_e4m3fn:  # fp8 files keep norms, biases and embeddings in bf16
        sd = {
            k: v.to(dtype if (k.startswith("transformer_blocks.") and v.ndim == 2) else torch.bfloat16)
            for k, v in sd.items()
        }
    else:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    save_file(sd, str(path))
    return path
