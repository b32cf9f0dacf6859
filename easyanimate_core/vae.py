"""MagViT causal 3D VAE of EasyAnimate V5/V5.1: config, state-dict keys, encode/decode, spatial tiling.

Numerically the same as diffusers' ``AutoencoderKLMagvit`` (checked in tests/test_vae.py). The video
is processed causally in mini-batches: the first frame alone, then groups of ``mini_batch_encoder``
frames (``mini_batch_decoder`` latent frames when decoding), with the temporal cache of the causal
convs handed from one mini-batch to the next explicitly (see ``vae_blocks``).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from .memory import is_out_of_memory, raise_with_advice
from .vae_blocks import DOWN_BLOCKS, UP_BLOCKS, Decoder, Encoder

log = logging.getLogger("EasyAnimate")

Progress = Callable[[int, int], None]


_DOWN = ("SpatialDownBlock3D",) + ("SpatialTemporalDownBlock3D",) * 3
_UP = ("SpatialUpBlock3D",) + ("SpatialTemporalUpBlock3D",) * 3
# keys only the original EasyAnimate config.json has (its class registers them, diffusers' does not)
_ORIGINAL_KEYS = {"ch", "ch_mult", "cache_mag_vae", "mini_batch_encoder", "mini_batch_decoder", "mid_block_type"}


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    down_block_types: tuple[str, ...] = _DOWN
    up_block_types: tuple[str, ...] = _UP
    layers_per_block: int = 2
    act_fn: str = "silu"
    norm_num_groups: int = 32
    scaling_factor: float = 0.7125
    spatial_group_norm: bool = True
    mini_batch_encoder: int = 4  # pixel frames per encoder call after the first frame
    mini_batch_decoder: int = 1  # latent frames per decoder call after the first latent frame

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"need {n} down and up block types (one per block_out_channels entry)")
        for kind in self.down_block_types:
            if kind not in DOWN_BLOCKS:
                raise ValueError(f"unsupported down block {kind!r}; supported: {sorted(DOWN_BLOCKS)}")
        for kind in self.up_block_types:
            if kind not in UP_BLOCKS:
                raise ValueError(f"unsupported up block {kind!r}; supported: {sorted(UP_BLOCKS)}")

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_compression(self) -> int:
        # the last block never resamples
        return 2 ** sum(DOWN_BLOCKS[k] == "spatiotemporal" for k in self.down_block_types[:-1])

    @classmethod
    def from_dict(cls, cfg: dict) -> VAEConfig:
        """Read a diffusers or an original EasyAnimate ``vae/config.json``."""
        cfg = dict(cfg)
        original = bool(_ORIGINAL_KEYS & cfg.keys())
        if original:
            _check_original(cfg)
            if cfg.get("block_out_channels") is None:
                cfg["block_out_channels"] = [cfg.get("ch", 128) * m for m in cfg.get("ch_mult", (1, 2, 4, 4))]
            cfg.setdefault("spatial_group_norm", False)  # the original class's default
        for key in ("block_out_channels", "down_block_types", "up_block_types"):
            if isinstance(cfg.get(key), str):  # the original accepts "['SpatialDownBlock3D', ...]"
                cfg[key] = ast.literal_eval(cfg[key])
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        known = {f.name for f in fields(cls)}
        ignored = sorted(k for k in cfg if k not in known and not k.startswith("_"))
        if ignored:
            log.debug("VAE config: ignoring %s", ", ".join(ignored))
        return cls(**{k: v for k, v in cfg.items() if k in known and v is not None})


def _check_original(cfg: dict) -> None:
    """Refuse original-format options that change the network or its frame schedule (V2-V4 VAEs)."""
    if cfg.get("mid_block_use_attention", True):
        raise ValueError("VAE config: mid_block_use_attention=true (an EasyAnimate V2-V4 VAE) is not supported")
    if any(cfg.get("use_gc_blocks") or ()):
        raise ValueError("VAE config: use_gc_blocks is not supported")
    if cfg.get("mid_block_type", "MidBlock3D") != "MidBlock3D":
        raise ValueError(f"VAE config: mid_block_type {cfg['mid_block_type']!r} is not supported")
    if not cfg.get("cache_mag_vae", False):
        raise ValueError("VAE config: only the V5/V5.1 frame schedule (cache_mag_vae=true) is supported")


# Both published layouts (original EasyAnimate V5/V5.1 ``vae/`` folders and diffusers folders) use
# the same parameter names, which are ours. What differs between files in the wild is a prefix, and
# training checkpoints carry extra modules.
_PREFIXES = {"vae.": "", "first_stage_model.": "", "module.": ""}
_DROPPED = ("loss.",)  # discriminator / LPIPS of training checkpoints
_UNSUPPORTED = {"mid_block.attentions.": "mid-block attention", ".gc_block.": "global-context blocks"}


def convert_vae_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a VAE state dict from any known layout onto ``MagvitVAE``'s parameter names."""
    out = {}
    for key, value in sd.items():
        for prefix, repl in _PREFIXES.items():
            if key.startswith(prefix):
                key = repl + key[len(prefix) :]
                break
        if key.startswith(_DROPPED):
            continue
        for part, what in _UNSUPPORTED.items():
            if part in key:
                raise ValueError(f"VAE weights contain {what} ({key}); only the V5/V5.1 MagViT VAE is supported")
        out[key] = value
    return out


@dataclass(frozen=True)
class VAETiling:
    """Spatial tiling: square tiles of ``tile_size`` pixels overlapping by ``overlap`` (a fraction of
    the tile when < 1, else pixels); the overlaps are blended linearly, as in diffusers."""

    tile_size: int = 512
    overlap: float = 0.125

    def sizes(self, spatial: int) -> tuple[int, int]:
        """(tile, stride) in pixels, both multiples of ``spatial``; stride = tile - overlap."""
        if self.tile_size < spatial or self.tile_size % spatial:
            raise ValueError(f"tile_size must be a multiple of {spatial}; nearest: {_nearest(self.tile_size, spatial)}")
        overlap = self.overlap * self.tile_size if self.overlap < 1 else self.overlap
        stride = round((self.tile_size - overlap) / spatial) * spatial
        return self.tile_size, min(max(stride, spatial), self.tile_size)


def _nearest(value: int, multiple: int, offset: int = 0) -> int:
    """The valid value ``k * multiple + offset`` closest to ``value`` (k >= 1 when offset is 0)."""
    k = max(round((value - offset) / multiple), 0 if offset else 1)
    return k * multiple + offset


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """Cross-fade the last ``extent`` rows/columns of ``a`` into the first of ``b``, in place."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent <= 0:
        return
    w = torch.arange(extent, device=b.device, dtype=b.dtype) / extent
    w = w.view(-1, 1) if dim == 3 else w
    head, tail = b.narrow(dim, 0, extent), a.narrow(dim, a.shape[dim] - extent, extent)
    head.copy_(tail * (1 - w) + head * w)


class MagvitVAE(nn.Module):
    """EasyAnimate's MagViT VAE. ``encode`` gives (mean, logvar); ``decode`` takes raw latents (the
    caller multiplies by / divides by ``scaling_factor``)."""

    def __init__(self, config: VAEConfig | dict):
        super().__init__()
        self.config = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)
        c = self.config.latent_channels
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = nn.Conv3d(2 * c, 2 * c, kernel_size=1)
        self.post_quant_conv = nn.Conv3d(c, c, kernel_size=1)

    @classmethod
    def from_config(cls, cfg: dict) -> MagvitVAE:
        return cls(VAEConfig.from_dict(cfg))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.config.temporal_compression

    # ---- validation -------------------------------------------------------------------------

    def _check(self, x: torch.Tensor, what: str, channels: int, frame_multiple: int, size_multiple: int) -> None:
        if x.ndim != 5:
            raise ValueError(f"{what} must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        _, c, t, h, w = x.shape
        if t < 1:
            raise ValueError(f"{what} has no frames (nearest valid value: 1)")
        if c != channels:
            raise ValueError(f"{what} must have {channels} channels, got {c} (nearest valid value: {channels})")
        if (t - 1) % frame_multiple:
            raise ValueError(
                f"{what} must have {frame_multiple}k+1 frames, got {t} "
                f"(nearest valid value: {_nearest(t, frame_multiple, 1)})"
            )
        for name, size in (("height", h), ("width", w)):
            if size % size_multiple or size == 0:
                raise ValueError(
                    f"{what} {name} must be a multiple of {size_multiple}, got {size} "
                    f"(nearest valid value: {_nearest(size, size_multiple)})"
                )

    # ---- untiled passes over one (tile of a) video -------------------------------------------

    def _encode_frames(self, x: torch.Tensor, tick: Callable[[], None]) -> torch.Tensor:
        """[B, 3, T, H, W] -> moments [B, 2C, t, h, w] (after quant_conv)."""
        step = self.config.mini_batch_encoder
        chunks = [x[:, :, :1]] + [x[:, :, i : i + step] for i in range(1, x.shape[2], step)]
        out, cache = [], None
        for chunk in chunks:
            h, cache = self.encoder(chunk, cache)
            out.append(h)
            tick()
        return self.quant_conv(torch.cat(out, dim=2))

    def _decode_frames(self, z: torch.Tensor, tick: Callable[[], None]) -> torch.Tensor:
        """Raw latents [B, C, t, h, w] -> video [B, 3, T, H, W]."""
        z = self.post_quant_conv(z)
        step = self.config.mini_batch_decoder
        chunks = [z[:, :, :1]] + [z[:, :, i : i + step] for i in range(1, z.shape[2], step)]
        out, cache = [], None
        for chunk in chunks:
            x, cache = self.decoder(chunk, cache)
            out.append(x)
            tick()
        return torch.cat(out, dim=2)

    def _chunks(self, frames: int, step: int) -> int:
        return 1 + -(-(frames - 1) // step)

    # ---- public API -----------------------------------------------------------------------

    @torch.no_grad()
    def encode(
        self, video: torch.Tensor, *, tile: VAETiling | None = None, progress: Progress | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video [B, 3, T, H, W] in -1..1 (T = 4k+1, H and W multiples of 8) -> (mean, logvar), each
        [B, C, k+1, H/8, W/8]; logvar clamped to [-30, 20] like diffusers' posterior. Out of device memory,
        it retries in smaller tiles (``retry_in_tiles``)."""
        self._check(video, "video", self.config.in_channels, self.temporal_compression, self.spatial_compression)
        _, _, _, height, width = video.shape
        return retry_in_tiles(lambda t: self._encode(video, t, progress), tile, height, width, "encode")

    def _encode(
        self, video: torch.Tensor, tile: VAETiling | None, progress: Progress | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spatial_compression
        video = video.to(self.quant_conv.weight.dtype)
        _, _, t, height, width = video.shape
        size, stride = tile.sizes(s) if tile else (0, 0)
        tiled = tile is not None and (height > size or width > size)
        starts_h = range(0, height, stride) if tiled else range(1)
        starts_w = range(0, width, stride) if tiled else range(1)
        tick = _counter(progress, len(starts_h) * len(starts_w) * self._chunks(t, self.config.mini_batch_encoder))
        if not tiled:
            moments = self._encode_frames(video, tick)
        else:
            rows = [
                [self._encode_frames(video[:, :, :, i : i + size, j : j + size], tick) for j in starts_w]
                for i in starts_h
            ]
            moments = _stitch(rows, blend=(size - stride) // s, keep=stride // s, height=height // s, width=width // s)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, *, tile: VAETiling | None = None, progress: Progress | None = None
    ) -> torch.Tensor:
        """Raw latents [B, C, t, h, w] -> video [B, 3, 4(t-1)+1, 8h, 8w], roughly in -1..1. Out of device memory,
        it retries in smaller tiles (``retry_in_tiles``)."""
        self._check(z, "latents", self.latent_channels, 1, 1)
        s = self.spatial_compression
        return retry_in_tiles(lambda t: self._decode(z, t, progress), tile, z.shape[-2] * s, z.shape[-1] * s, "decode")

    def _decode(self, z: torch.Tensor, tile: VAETiling | None, progress: Progress | None) -> torch.Tensor:
        s = self.spatial_compression
        z = z.to(self.post_quant_conv.weight.dtype)
        _, _, t, height, width = z.shape
        size, stride = tile.sizes(s) if tile else (0, 0)
        tiled = tile is not None and (height > size // s or width > size // s)
        starts_h = range(0, height, stride // s) if tiled else range(1)
        starts_w = range(0, width, stride // s) if tiled else range(1)
        tick = _counter(progress, len(starts_h) * len(starts_w) * self._chunks(t, self.config.mini_batch_decoder))
        if not tiled:
            return self._decode_frames(z, tick)
        lat = size // s
        rows = [[self._decode_frames(z[:, :, :, i : i + lat, j : j + lat], tick) for j in starts_w] for i in starts_h]
        return _stitch(rows, blend=size - stride, keep=stride, height=height * s, width=width * s)


MIN_FALLBACK_TILE = 64  # the smallest tile the out-of-memory fallback tries (the nodes' smallest tile_size)


def smaller_tile(size: int) -> int | None:
    """The tile size to try after running out of memory at ``size`` pixels: about half of it, a multiple of 64
    (so of every VAE's compression), or None below ``MIN_FALLBACK_TILE``."""
    smaller = size // 2 // MIN_FALLBACK_TILE * MIN_FALLBACK_TILE
    return smaller if smaller >= MIN_FALLBACK_TILE else None


def retry_in_tiles(
    run: Callable[[VAETiling | None], torch.Tensor],
    tile: VAETiling | None,
    height: int,
    width: int,
    what: str,
):
    """``run(tile)``; when the device runs out of memory, again with tiles of about half the size (the whole
    frame's larger side when untiled), down to 64 pixels, as ComfyUI's own VAE decode falls back to tiles.

    Each retry starts after the failed attempt's exception is gone, so its activations are freed first; the
    weights are unchanged. When even the smallest tile does not fit, the last out-of-memory error is raised, of its
    own type, with advice first (``memory.raise_with_advice``).
    """
    side = max(height, width)
    while True:
        try:
            return run(tile)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            tiled = tile is not None and tile.tile_size < side  # a tile as large as the frame runs untiled
            failed = tile.tile_size if tiled else side
            smaller = smaller_tile(failed)
            if smaller is None:
                where = f"in {failed}-pixel tiles, the smallest it tries" if tiled else "untiled"
                advice = (
                    f"out of memory in the VAE {what} of {width}x{height} frames {where}: other models on the GPU "
                    "hold its memory (in memory mode none the transformer and the text encoder stay there; "
                    "model_offload moves each model off the GPU after its stage), or make the video smaller"
                )
                raise_with_advice(error, advice)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning(
            "EasyAnimate VAE %s of %dx%d frames ran out of memory %s; retrying in %d-pixel tiles "
            "(turn on `tile` with a tile_size of %d or less to start there)",
            what, width, height, f"in {failed}-pixel tiles" if tiled else "untiled", smaller, smaller,
        )  # fmt: skip
        # an overlap in pixels becomes the same fraction of the smaller tile (else it could leave no stride)
        overlap = (
            VAETiling.overlap if tile is None else tile.overlap if tile.overlap < 1 else tile.overlap / tile.tile_size
        )
        tile = VAETiling(smaller, min(overlap, 0.5))


def _stitch(rows: list[list[torch.Tensor]], blend: int, keep: int, height: int, width: int) -> torch.Tensor:
    """Blend each tile with the (already blended) tiles above and to its left, keep its first
    ``keep`` rows/columns and assemble; the diffusers ``tiled_decode`` scheme."""
    out_rows = []
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i > 0:
                _blend(rows[i - 1][j], tile, blend, dim=3)
            if j > 0:
                _blend(row[j - 1], tile, blend, dim=4)
        out_rows.append(torch.cat([tile[:, :, :, :keep, :keep] for tile in row], dim=4))
    return torch.cat(out_rows, dim=3)[:, :, :, :height, :width]


def _counter(progress: Progress | None, total: int) -> Callable[[], None]:
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick
