"""Layers of the MagViT causal 3D VAE (EasyAnimate V5/V5.1).

Every causal module has ``forward(x, cache) -> (y, new_cache)``. ``cache`` is ``None`` for the first
mini-batch of a video (the causal convs then replicate-pad the first frame in time and the temporal
upsamplers do not upsample), and otherwise the value the same module returned for the previous
mini-batch: a tensor (the last input frames) for a conv, a list of its children's caches for a
container. Nothing is stored on the modules, so there is nothing to clear between runs.

Parameter names follow the EasyAnimate / diffusers ``AutoencoderKLMagvit`` state dicts (both use the
same names). Written after aigc-apps/EasyAnimate ``vaemodules`` and diffusers' port of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .vae import VAEConfig

Cache = Any  # None | Tensor | list[Cache]

_ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "mish": nn.Mish}


def _child(cache: Cache, index: int) -> Cache:
    return None if cache is None else cache[index]


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def group_norm(norm: nn.GroupNorm, x: torch.Tensor, per_frame: bool) -> torch.Tensor:
    """GroupNorm over each frame separately (``per_frame``, EasyAnimate's ``spatial_group_norm``) or
    over all frames of the mini-batch jointly."""
    if not per_frame:
        return norm(x)
    batch = x.shape[0]
    x = norm(x.transpose(1, 2).flatten(0, 1))  # [B, C, T, H, W] -> [B*T, C, H, W]
    return x.unflatten(0, (batch, -1)).transpose(1, 2)  # [B*T, C, H, W] -> [B, C, T, H, W]


class CausalConv3d(nn.Conv3d):
    """3D conv that only looks back in time: ``kernel - 1`` past frames come from the cache, or from
    replicating the first frame when there is no cache."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1), padding: int = 1
    ):
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, padding, padding))
        self.time_pad = kernel - 1

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cache is None:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0), mode="replicate")
        else:
            # a stride-2 conv consumed all but its last cached frame in the previous mini-batch
            past = self.time_pad - 1 if self.stride[0] == 2 else self.time_pad
            x = torch.cat([cache[:, :, cache.shape[2] - past :], x], dim=2)
        return super().forward(x), x[:, :, -self.time_pad :]


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, act: str, per_frame: bool, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = CausalConv3d(cout, cout)
        self.shortcut = nn.Conv3d(cin, cout, kernel_size=1) if cin != cout else nn.Identity()
        self.act = activation(act)
        self.per_frame = per_frame

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        shortcut = self.shortcut(x)
        x, c1 = self.conv1(self.act(group_norm(self.norm1, x, self.per_frame)), _child(cache, 0))
        x, c2 = self.conv2(self.act(group_norm(self.norm2, x, self.per_frame)), _child(cache, 1))
        return x + shortcut, [c1, c2]


class Downsampler(nn.Module):
    """Halves H and W (and T when ``temporal``) with a strided causal conv."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(2 if temporal else 1, 2, 2), padding=0)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        return self.conv(F.pad(x, (0, 1, 0, 1)), cache)  # pad right and bottom by one pixel


class Upsampler(nn.Module):
    """Doubles H and W (nearest, then a causal conv) and, when ``temporal``, doubles T for every
    mini-batch after the first, so the first latent frame decodes to one frame."""

    def __init__(self, channels: int, temporal: bool, per_frame: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels)
        self.temporal = temporal
        self.time_mode = "nearest" if per_frame else "trilinear"

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        x, cache_out = self.conv(x, cache)
        if self.temporal and cache is not None:
            x = F.interpolate(x, scale_factor=(2, 1, 1), mode=self.time_mode)
        return x, cache_out


class Block(nn.Module):
    """``convs`` (residual blocks) followed by an optional ``downsampler`` or ``upsampler``; also
    the mid block (no resampler). The attribute names are the checkpoint's."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, act: str, per_frame: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            ResidualBlock(cin if i == 0 else cout, cout, groups, act, per_frame) for i in range(layers)
        )

    def resample(self, x: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, Cache]:
        return x, None

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        new = []
        for i, conv in enumerate(self.convs):
            x, c = conv(x, _child(cache, i))
            new.append(c)
        x, c = self.resample(x, _child(cache, len(self.convs)))
        return x, [*new, c]


class DownBlock(Block):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, act: str, per_frame: bool, down: str | None):
        super().__init__(cin, cout, layers, groups, act, per_frame)
        self.downsampler = Downsampler(cout, temporal=down == "spatiotemporal") if down else None

    def resample(self, x: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, Cache]:
        return (x, None) if self.downsampler is None else self.downsampler(x, cache)


class UpBlock(Block):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, act: str, per_frame: bool, up: str | None):
        super().__init__(cin, cout, layers, groups, act, per_frame)
        self.upsampler = Upsampler(cout, temporal=up == "spatiotemporal", per_frame=per_frame) if up else None

    def resample(self, x: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, Cache]:
        return (x, None) if self.upsampler is None else self.upsampler(x, cache)


# block type -> kind of resampling it does when it is not the last block
DOWN_BLOCKS = {"SpatialDownBlock3D": "spatial", "SpatialTemporalDownBlock3D": "spatiotemporal"}
UP_BLOCKS = {"SpatialUpBlock3D": "spatial", "SpatialTemporalUpBlock3D": "spatiotemporal"}


class Encoder(nn.Module):
    """[B, 3, T, H, W] -> moments before ``quant_conv`` [B, 2*latent, t, H/8, W/8] for one mini-batch."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, act, per_frame = cfg.block_out_channels, cfg.norm_num_groups, cfg.act_fn, cfg.spatial_group_norm
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        kinds = [DOWN_BLOCKS[k] for k in cfg.down_block_types[:-1]] + [None]  # the last block keeps its size
        self.down_blocks = nn.ModuleList(
            DownBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, groups, act, per_frame, kind)
            for i, kind in enumerate(kinds)
        )
        self.mid_block = Block(ch[-1], ch[-1], cfg.layers_per_block, groups, act, per_frame)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_act = activation(act)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)
        self.per_frame = per_frame

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        x, c_in = self.conv_in(x, _child(cache, 0))
        c_down = []
        for i, block in enumerate(self.down_blocks):
            x, c = block(x, _child(_child(cache, 1), i))
            c_down.append(c)
        x, c_mid = self.mid_block(x, _child(cache, 2))
        x = self.conv_act(group_norm(self.conv_norm_out, x, self.per_frame))
        x, c_out = self.conv_out(x, _child(cache, 3))
        return x, [c_in, c_down, c_mid, c_out]


class Decoder(nn.Module):
    """Latents after ``post_quant_conv`` [B, latent, t, h, w] -> video [B, 3, T', 8h, 8w] for one
    mini-batch (T' = t for the first mini-batch, 4t after it)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels[::-1]
        groups, act, per_frame = cfg.norm_num_groups, cfg.act_fn, cfg.spatial_group_norm
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        # diffusers always normalises the decoder mid block per frame, the original only with
        # spatial_group_norm; with one latent frame per mini-batch (V5.x) both are the same.
        self.mid_block = Block(ch[0], ch[0], cfg.layers_per_block, groups, act, per_frame)
        kinds = [UP_BLOCKS[k] for k in cfg.up_block_types[:-1]] + [None]
        self.up_blocks = nn.ModuleList(
            UpBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, groups, act, per_frame, kind)
            for i, kind in enumerate(kinds)
        )
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_act = activation(act)
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels)
        self.per_frame = per_frame

    def forward(self, x: torch.Tensor, cache: Cache = None) -> tuple[torch.Tensor, Cache]:
        x, c_in = self.conv_in(x, _child(cache, 0))
        x, c_mid = self.mid_block(x, _child(cache, 1))
        c_up = []
        for i, block in enumerate(self.up_blocks):
            x, c = block(x, _child(_child(cache, 2), i))
            c_up.append(c)
        x = self.conv_act(group_norm(self.conv_norm_out, x, self.per_frame))
        x, c_out = self.conv_out(x, _child(cache, 3))
        return x, [c_in, c_mid, c_up, c_out]
