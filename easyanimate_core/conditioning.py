"""Latent conditioning for image-to-video, video-to-video (with inpaint masks) and control video.

Videos here are ``[B, 3, T, H, W]`` in -1..1 at the generation size; masks ``[B, 1, T, H, W]`` with 1
where frames are generated and 0 where they are kept. The layouts follow the EasyAnimate pipelines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .configs import CAMERA_CHANNELS, TransformerConfig, Variant
from .vae import MagvitVAE, Progress

SIZE_MULTIPLE = 16  # 8x VAE downsampling times the transformer's 2x2 patches


def nearest_multiple(value: int, multiple: int) -> int:
    return max(multiple, int(value / multiple + 0.5) * multiple)  # halves round up


def nearest_frames(frames: int) -> int:
    """The nearest frame count of the form 4k+1 (the VAE keeps the first frame alone)."""
    return max(1, int((frames - 1) / 4 + 0.5) * 4 + 1)


def check_size(width: int, height: int, frames: int) -> None:
    """Raise ValueError naming the nearest valid value when a generation size cannot be used."""
    for name, value in (("width", width), ("height", height)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise ValueError(
                f"{name} must be divisible by {SIZE_MULTIPLE}; nearest: {nearest_multiple(value, SIZE_MULTIPLE)}"
            )
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 4k+1 (1, 5, 9, ..., 49); nearest: {nearest_frames(frames)}")


def frame_indices(count: int, frames: int, resample: bool, what: str) -> torch.Tensor:
    """Which of ``count`` input frames make a ``frames``-frame video: all of them when the counts match, else
    (with ``resample``) evenly spread nearest frames, first and last kept; without it a ValueError."""
    if count < 1:
        raise ValueError(f"the {what} has no frames")
    if count != frames and not resample:
        raise ValueError(
            f"the {what} has {count} frames but {frames} are generated: set frames to {count} if that is 4k+1, "
            "pick frames with Image From Batch, or turn resample on to spread its frames over the video"
        )
    return torch.linspace(0, count - 1, frames).round().long()


def latent_shape(vae: MagvitVAE, width: int, height: int, frames: int, batch: int = 1) -> tuple[int, ...]:
    s, t = vae.spatial_compression, vae.temporal_compression
    return (batch, vae.latent_channels, (frames - 1) // t + 1, height // s, width // s)


def encode_mode(vae: MagvitVAE, video: torch.Tensor, **kw) -> torch.Tensor:
    """Scaled latents of a video from the posterior's mode (its mean), as the pipelines condition."""
    param = next(vae.parameters())
    mean, _ = vae.encode(video.to(param.device, param.dtype), **kw)
    return mean * vae.scaling_factor


def resize_mask(mask: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Pixel mask [B, 1, T, H, W] -> latent grid ``size`` (t, h, w), the first frame resized on its own."""
    t, h, w = size
    first = F.interpolate(mask[:, :, :1], size=(1, h, w), mode="trilinear", align_corners=False)
    if t == 1:
        return first
    rest = F.interpolate(mask[:, :, 1:], size=(t - 1, h, w), mode="trilinear", align_corners=False)
    return torch.cat([first, rest], dim=2)


def image_to_video(
    start: torch.Tensor | None, end: torch.Tensor | None, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start/end images [B, 3, H, W] -> (video [B, 3, T, H, W], mask [B, 1, T, H, W]).

    The start image fills every frame (as the official pipeline does) and is kept on frame 0; the end
    image replaces and is kept on the last frame. Either may be None. ``start`` may also be K frames
    [B, 3, K, H, W] (continuing a clip, as the official long-video loop does): they are kept on the first K
    frames and the first of them fills the rest.
    """
    ref = start if start is not None else end
    if ref is None:
        raise ValueError("image-to-video needs a start image, an end image, or both")
    if start is not None and start.ndim == 4:
        start = start[:, :, None]  # one image = one kept frame
    kept = 0 if start is None else start.shape[2]
    if kept + (end is not None) > frames:
        raise ValueError(
            f"{kept} start frame(s){' and an end image' if end is not None else ''} do not fit in {frames} frames: "
            "generate more frames or keep fewer"
        )
    if kept > 1 and kept + (end is not None) == frames:  # as continuing a clip (builders.check_continuation)
        raise ValueError(
            f"{kept} start frames{' and an end image' if end is not None else ''} leave none of the {frames} frames "
            f"to generate: raise frames to {frames + 4} or connect fewer images"
        )
    first = start[:, :, 0] if start is not None else end
    b, _, h, w = first.shape
    video = first[:, :, None].expand(b, 3, frames, h, w).clone()
    mask = torch.ones(b, 1, frames, h, w, dtype=first.dtype, device=first.device)
    if start is not None:
        video[:, :, :kept] = start
        mask[:, :, :kept] = 0
    if end is not None:
        if end.shape != first.shape:
            raise ValueError(f"end image is {tuple(end.shape[-2:])} but start image is {(h, w)}; resize both alike")
        video[:, :, -1] = end
        mask[:, :, -1] = 0
    return video, mask


def add_reference_noise(video: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Noise augmentation of the kept frames (InP models trained with it); blank (-1) pixels stay blank."""
    noise = (torch.randn(video.shape, generator=generator, dtype=video.dtype) * strength).to(video.device)
    return video + torch.where(video == -1, torch.zeros_like(noise), noise)


def inpaint_latents(
    vae: MagvitVAE,
    cfg: TransformerConfig,
    video: torch.Tensor | None,
    mask: torch.Tensor | None,
    latent_size: tuple[int, int, int],
    *,
    noise_aug_strength: float = 0.0563,
    generator: torch.Generator | None = None,
    tile=None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The InP transformer's extra input [B, 1 + C, t, h, w]: kept-region mask and masked-video latents.

    With no video, or a mask that regenerates everything, both parts are zero (plain text-to-video).
    ``progress(done, total)`` is passed to the VAE encode.
    """
    if cfg.variant != Variant.INP:
        raise ValueError(f"image/inpaint conditioning needs an InP checkpoint; this one is {cfg.variant.value}")
    if not cfg.resize_inpaint_mask_directly:
        raise ValueError(
            "checkpoints that VAE-encode the inpaint mask (resize_inpaint_mask_directly=false) are not supported"
        )
    c = vae.latent_channels
    b = 1 if video is None else video.shape[0]
    if video is None or mask is None or bool((mask > 0.5).all()):
        return torch.zeros(b, 1 + c, *latent_size)
    mask = (mask > 0.5).to(video.dtype)  # binarised like diffusers' mask processor
    masked = video * (1 - mask) - mask  # regenerated pixels are -1
    if cfg.add_noise_in_inpaint_model:
        if generator is None:
            raise ValueError("noise augmentation needs a generator")
        masked = add_reference_noise(masked, noise_aug_strength, generator)
    masked_latents = encode_mode(vae, masked, tile=tile, progress=progress)
    mask_latents = resize_mask(1 - mask, masked_latents.shape[2:]) * vae.scaling_factor
    return torch.cat([mask_latents.to(masked_latents), masked_latents], dim=1)


def takes_ref_image(cfg: TransformerConfig) -> bool:
    """Whether a Control / Control-Camera checkpoint has input channels for ref-image latents (V5.1 does)."""
    main = CAMERA_CHANNELS if cfg.variant == Variant.CAMERA else cfg.out_channels
    return cfg.in_channels - cfg.out_channels - main == cfg.out_channels


def check_ref_image(cfg: TransformerConfig) -> None:
    """Raise the error :func:`control_latents` gives for a ref image the checkpoint cannot take, before any work."""
    if not takes_ref_image(cfg):
        raise ValueError(
            f"this {cfg.variant.value} checkpoint ({cfg.version}) takes no reference image: disconnect ref_image, "
            "or use a V5.1 Control checkpoint (e.g. EasyAnimateV5.1-12b-zh-Control)"
        )


def control_latents(
    vae: MagvitVAE,
    cfg: TransformerConfig,
    control_video: torch.Tensor | None,
    ref_image: torch.Tensor | None,
    latent_size: tuple[int, int, int],
    *,
    camera: torch.Tensor | None = None,
    tile=None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The Control transformer's extra input [B, Cc, t, h, w].

    Control: VAE latents of the control video (zeros without one). Control-Camera: the Plücker embedding
    [B, 6, T, H, W] resized to the latent grid (first frame alone) and scaled by 6. Then, for V5.1
    control models, the ref image's latents on the first latent frame (zeros without a ref image).
    ``progress(done, total)`` is passed to each VAE encode.
    """
    variant = cfg.variant
    if variant not in (Variant.CONTROL, Variant.CAMERA):
        raise ValueError(f"control video and camera input need a Control checkpoint; this one is {variant.value}")
    c = vae.latent_channels
    if variant == Variant.CAMERA:
        if camera is None:
            raise ValueError("this Control-Camera checkpoint needs a camera path (presets or a pose file)")
        if control_video is not None:
            raise ValueError(
                "a Control-Camera checkpoint takes a camera path, not a control video: use a Control checkpoint "
                "for control videos"
            )
        main = resize_mask(camera.float(), latent_size) * 6
    else:
        if camera is not None:
            raise ValueError("camera input needs a Control-Camera checkpoint; this one is Control")
        b = 1 if control_video is None else control_video.shape[0]
        main = (
            encode_mode(vae, control_video, tile=tile, progress=progress)
            if control_video is not None
            else torch.zeros(b, c, *latent_size)
        )
    parts = [main]
    if cfg.in_channels - cfg.out_channels - main.shape[1] == c:  # the checkpoint takes ref-image latents
        ref = torch.zeros(main.shape[0], c, *latent_size, dtype=main.dtype, device=main.device)
        if ref_image is not None and latent_size[0] != 1:
            ref[:, :, :1] = encode_mode(vae, ref_image[:, :, None], tile=tile, progress=progress)
        parts.append(ref)
    elif ref_image is not None:
        check_ref_image(cfg)
    return torch.cat(parts, dim=1)


# EasyAnimate's training buckets at base resolution 512: (height/width ratio key, height, width). The
# official ComfyUI nodes pick the bucket whose key is nearest to the image's height/width ratio, scale it
# by base/512 and round each side down to a multiple of 16.
BUCKETS_512 = (
    (0.25, 256, 1024), (0.26, 256, 992), (0.27, 256, 960), (0.28, 256, 928), (0.32, 288, 896), (0.33, 288, 864),
    (0.35, 288, 832), (0.4, 320, 800), (0.42, 320, 768), (0.48, 352, 736), (0.5, 352, 704), (0.52, 352, 672),
    (0.57, 384, 672), (0.6, 384, 640), (0.68, 416, 608), (0.72, 416, 576), (0.78, 448, 576), (0.82, 448, 544),
    (0.88, 480, 544), (0.94, 480, 512), (1.0, 512, 512), (1.07, 512, 480), (1.13, 544, 480), (1.21, 544, 448),
    (1.29, 576, 448), (1.38, 576, 416), (1.46, 608, 416), (1.67, 640, 384), (1.75, 672, 384), (2.0, 704, 352),
    (2.09, 736, 352), (2.4, 768, 320), (2.5, 800, 320), (2.89, 832, 288), (3.0, 864, 288), (3.11, 896, 288),
    (3.62, 928, 256), (3.75, 960, 256), (3.88, 992, 256), (4.0, 1024, 256),
)  # fmt: skip
BASE_RESOLUTIONS = (512, 768, 960, 1024)  # the official nodes' choices


def bucket_size(image_width: int, image_height: int, base_resolution: int = 512) -> tuple[int, int]:
    """(width, height) of the trained aspect-ratio bucket nearest to an image's shape at a base resolution."""
    if base_resolution not in BASE_RESOLUTIONS:
        raise ValueError(f"base resolution must be one of {BASE_RESOLUTIONS}, got {base_resolution}")
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image size must be positive, got {image_width}x{image_height}")
    ratio = image_height / image_width
    _, h, w = min(BUCKETS_512, key=lambda b: abs(b[0] - ratio))
    scale = base_resolution / 512
    return int(w * scale / 16) * 16, int(h * scale / 16) * 16
