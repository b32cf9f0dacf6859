"""EasyAnimate VAE Decode / Encode: video latents <-> IMAGE frames."""

from __future__ import annotations

import torch

from ..easyanimate_core.builders import check_video_latent
from ..easyanimate_core.conditioning import check_size
from ..easyanimate_core.frames import rgb_frames
from ..easyanimate_core.memory import vae_vram_bytes
from ..easyanimate_core.runner import vae_decode, vae_encode
from ..easyanimate_core.vae import VAETiling
from . import host
from .types import CATEGORY, VAE

TILE_TOOLTIP = "Pixel size of the square tiles (64 to 4096 in steps of 64; smaller tiles use less VRAM); they overlap by 1/8 and are blended."


class EasyAnimateVAEDecode:
    DESCRIPTION = (
        "Decodes EasyAnimate video latents into frames (an IMAGE batch, one image per frame) for Save Animated "
        "WEBP, Create Video or Video Combine. Tiling lowers the VRAM needed for large videos."
    )
    CATEGORY = f"{CATEGORY}/vae"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames, [frames, height, width, 3] in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE (from Load EasyAnimate Model or the VAE loader)."}),
                "samples": ("LATENT", {"tooltip": "Video latents from EasyAnimate Sampler."}),
                "tile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Decode in spatial tiles: slower, but needs far less VRAM. A decode that runs out "
                        "of VRAM anyway (untiled, or in tiles still too large) is retried in tiles of about half the "
                        "size automatically.",
                    },
                ),
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64, "tooltip": TILE_TOOLTIP}),
            }
        }

    def decode(self, vae, samples: dict, tile: bool, tile_size: int):
        latents = samples["samples"]
        check_video_latent(
            latents,
            vae.vae.config.latent_channels,
            "EasyAnimate VAE Decode",
            "decode it with that model's VAE Decode, or connect EasyAnimate Sampler's or VAE Encode's latent",
        )
        progress = host.make_progress_callback(1)
        tiling = VAETiling(tile_size) if tile else None
        scale = vae.vae.config.spatial_compression
        height, width = latents.shape[-2] * scale, latents.shape[-1] * scale
        device = host.make_room(vae_vram_bytes, vae.vae, height, width, vae.dtype, tile_size if tile else None)
        frames = vae_decode(vae, latents, device, host.offload_device("vae"), tiling, progress)
        return (frames,)


class EasyAnimateVAEEncode:
    DESCRIPTION = (
        "Encodes video frames (an IMAGE batch of 4k+1 frames, width and height multiples of 16) into EasyAnimate "
        "latents, e.g. for video to video in EasyAnimate Sampler. Resize the frames first (Upscale Image) and "
        "pick the frames with Image From Batch."
    )
    CATEGORY = f"{CATEGORY}/vae"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video's latents [1, C, T, H, W].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE (from Load EasyAnimate Model or the VAE loader)."}),
                "images": (
                    "IMAGE",
                    {"tooltip": "The video frames: 4k+1 of them (1, 5, ..., 49), width and height multiples of 16."},
                ),
                "tile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Encode in spatial tiles: slower, but needs far less VRAM. An encode that runs out "
                        "of VRAM anyway (untiled, or in tiles still too large) is retried in tiles of about half the "
                        "size automatically.",
                    },
                ),
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64, "tooltip": TILE_TOOLTIP}),
            }
        }

    def encode(self, vae, images: torch.Tensor, tile: bool, tile_size: int):
        if images.ndim != 4:
            raise ValueError(f"images must be an IMAGE [frames, H, W, C], got shape {tuple(images.shape)}")
        images = rgb_frames(images, "images")  # gray repeated to RGB, RGBA without its alpha, as every other node
        frames, height, width = images.shape[0], images.shape[1], images.shape[2]
        try:
            check_size(width, height, frames)
        except ValueError as e:
            raise ValueError(
                f"EasyAnimate VAE Encode got {frames} frames of {width}x{height}: {e} (resize with Upscale Image, "
                "pick frames with Image From Batch)"
            ) from e
        video = images.movedim(-1, 0)[None] * 2 - 1  # [T, H, W, 3] 0..1 -> [1, 3, T, H, W] -1..1
        progress = host.make_progress_callback(1)
        tiling = VAETiling(tile_size) if tile else None
        device = host.make_room(vae_vram_bytes, vae.vae, height, width, vae.dtype, tile_size if tile else None)
        latents = vae_encode(vae, video, device, host.offload_device("vae"), tiling, progress)
        return ({"samples": latents},)


NODE_CLASS_MAPPINGS = {"EasyAnimateVAEDecode": EasyAnimateVAEDecode, "EasyAnimateVAEEncode": EasyAnimateVAEEncode}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EasyAnimateVAEDecode": "EasyAnimate VAE Decode",
    "EasyAnimateVAEEncode": "EasyAnimate VAE Encode",
}
