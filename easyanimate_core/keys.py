"""Key tables between checkpoint layouts. Ours follow the original EasyAnimate names."""

from __future__ import annotations

import re

import torch

# diffusers' "-diffusers" re-publications keep the text-stream projections of multi-modal blocks inside
# ``attn1`` under added-key names; the original checkpoints (and this pack) hold them in ``attn2``.
TRANSFORMER_DIFFUSERS_TO_OURS = {
    "attn1.add_q_proj": "attn2.to_q",
    "attn1.add_k_proj": "attn2.to_k",
    "attn1.add_v_proj": "attn2.to_v",
    "attn1.to_add_out": "attn2.to_out.0",
    "attn1.norm_added_q": "attn2.norm_q",
    "attn1.norm_added_k": "attn2.norm_k",
}
_BLOCK_KEY = re.compile(r"^(transformer_blocks\.\d+\.)(attn1\.\w+)(\..+)$")

# Prefixes that wrappers put in front of the transformer's own names (ComfyUI, training scripts).
TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "module.")


def strip_prefix(
    sd: dict[str, torch.Tensor], prefixes: tuple[str, ...] = TRANSFORMER_PREFIXES
) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix shared by every key (only when all keys carry it)."""
    for prefix in prefixes:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def transformer_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers-layout transformer state dict to the original layout; other keys pass through."""
    out = {}
    for key, value in strip_prefix(sd).items():
        m = _BLOCK_KEY.match(key)
        if m and m.group(2) in TRANSFORMER_DIFFUSERS_TO_OURS:
            key = m.group(1) + TRANSFORMER_DIFFUSERS_TO_OURS[m.group(2)] + m.group(3)
        out[key] = value
    return out


_OURS_TO_DIFFUSERS = {v: k for k, v in TRANSFORMER_DIFFUSERS_TO_OURS.items()}
_OUR_BLOCK_KEY = re.compile(r"^(transformer_blocks\.\d+\.)(attn2\.(?:to_[qkv]|to_out\.0|norm_[qk]))(\..+)$")


def transformer_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`transformer_to_ours` (used to write diffusers-layout test checkpoints)."""
    out = {}
    for key, value in sd.items():
        m = _OUR_BLOCK_KEY.match(key)
        out[m.group(1) + _OURS_TO_DIFFUSERS[m.group(2)] + m.group(3) if m else key] = value
    return out


def is_diffusers_transformer(keys) -> bool:
    return any(".attn1.add_q_proj." in k for k in keys)
