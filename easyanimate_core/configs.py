"""Transformer configuration and model-variant detection.

A checkpoint's ``transformer/config.json`` (original EasyAnimate or diffusers layout; both use the same
keys) becomes a frozen :class:`TransformerConfig`. The variant (T2V, InP, Control, Control-Camera) and
version (V5 or V5.1) follow from the weights' shapes and the config, never from a folder name.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger("EasyAnimate")

# Keys of the published configs that do not change the network we build.
_IGNORED_KEYS = {
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "activation_fn",
    "timestep_activation_fn",
    "dropout",
    "time_position_encoding_type",
    "enable_clip_in_inpaint",
    "position_of_clip_embedding",
    "swa_layers",
    "transformer_type",
}

# Config keys that only the older EasyAnimate transformers register, whose networks this pack does not build:
# V4's HunyuanTransformer3DModel (a HunyuanDiT-style model) and V1-V3's Transformer3DModel (PixArt-style, with
# motion modules).
_OLDER_VERSIONS = (
    ("V4", "HunyuanTransformer3DModel", {"hidden_size", "n_query", "cross_attention_dim_t5", "text_len_t5"}),
    ("V1-V3", "Transformer3DModel", {"motion_module_type", "motion_module_kwargs", "patch_3d", "enable_uvit"}),
)

CAMERA_CHANNELS = 6  # Plücker ray embedding: (o x d, d) per pixel


class Variant(str, Enum):
    T2V = "T2V"
    INP = "InP"
    CONTROL = "Control"
    CAMERA = "Control-Camera"


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the EasyAnimate MMDiT (V5 and V5.1 checkpoints)."""

    num_attention_heads: int = 48
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    sample_width: int = 90
    sample_height: int = 60
    time_embed_dim: int = 512
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    num_layers: int = 48
    mmdit_layers: int = 48  # blocks with index >= mmdit_layers are single-stream
    add_norm_text_encoder: bool = False
    text_embed_dim: int = 3584
    text_embed_dim_t5: int | None = None  # V5's second (T5) text encoder
    norm_eps: float = 1e-5
    norm_elementwise_affine: bool = True
    after_norm: bool = False
    # Pipeline-level flags carried by the same config file.
    resize_inpaint_mask_directly: bool = True
    enable_text_attention_mask: bool = True
    add_noise_in_inpaint_model: bool = False
    add_ref_latent_in_control_model: bool = False
    ref_channels: int | None = None
    clip_channels: int | None = None

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TransformerConfig:
        """Build from a config.json dict; unknown keys are logged and ignored."""
        check_supported_version(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names - _IGNORED_KEYS)
        if unknown:
            log.info("transformer config: ignoring keys %s", ", ".join(unknown))
        kw = {k: v for k, v in raw.items() if k in names}
        if kw.get("out_channels") is None:
            kw["out_channels"] = 16
        if kw.get("patch_size") is None:
            kw["patch_size"] = 2
        if kw.get("in_channels") is None:
            kw["in_channels"] = kw["out_channels"]
        if raw.get("activation_fn", "gelu-approximate") != "gelu-approximate":
            raise ValueError(f"unsupported activation_fn {raw['activation_fn']!r}; EasyAnimate uses 'gelu-approximate'")
        if raw.get("swa_layers"):
            raise ValueError("checkpoints with sliding-window attention layers (swa_layers) are not supported")
        if kw.get("ref_channels") is not None or kw.get("clip_channels") is not None:
            raise ValueError(
                "this transformer has ref_channels/clip_channels set (an experimental EasyAnimate variant); "
                "only the published V5/V5.1 T2V, InP, Control and Control-Camera checkpoints are supported"
            )
        return cls(**kw)

    @property
    def version(self) -> str:
        """'V5' when the transformer has a second (T5) text projection, else 'V5.1'."""
        return "V5" if self.text_embed_dim_t5 is not None else "V5.1"

    @property
    def variant(self) -> Variant:
        return detect_variant(self.in_channels, self.out_channels)


def check_supported_version(raw: dict[str, Any], source: str = "the transformer config") -> None:
    """Raise a ValueError naming the version when ``raw`` (a transformer config.json) is an older EasyAnimate's."""
    for version, cls, keys in _OLDER_VERSIONS:
        found = sorted(keys & set(raw))
        if found:
            raise ValueError(
                f"{source} is an EasyAnimate {version} transformer ({raw.get('_class_name') or cls}: it has "
                f"{', '.join(found)}); this pack runs the V5.1 and V5 checkpoints (EasyAnimateTransformer3DModel), "
                "e.g. alibaba-pai/EasyAnimateV5.1-12b-zh-InP or EasyAnimateV5.1-7b-zh: put one of those in "
                "ComfyUI/models/EasyAnimate/"
            )


def detect_variant(in_channels: int, latent_channels: int) -> Variant:
    """The variant implied by the patch embedding's input width.

    T2V: latents only. InP: latents + mask (1) + masked-video latents. Control: latents + control
    latents (+ ref-image latents in V5.1). Control-Camera: latents + Plücker embedding (6) + ref latents.
    """
    c = latent_channels
    table = {
        c: Variant.T2V,
        2 * c + 1: Variant.INP,
        2 * c: Variant.CONTROL,
        3 * c: Variant.CONTROL,
        2 * c + CAMERA_CHANNELS: Variant.CAMERA,
    }
    if in_channels not in table:
        raise ValueError(
            f"transformer input width {in_channels} matches no EasyAnimate variant for {c} latent channels "
            f"(expected {c} T2V, {2 * c + 1} InP, {2 * c}/{3 * c} Control, {2 * c + CAMERA_CHANNELS} Control-Camera)"
        )
    return table[in_channels]
