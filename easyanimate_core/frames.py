"""Pixel inputs fitted to a generation size: ComfyUI IMAGE / MASK tensors -> video and mask tensors.

Every picture is scaled to cover the target size and centre-cropped (as the EasyAnimate pipelines do), so a
video and a mask of the same aspect ratio stay aligned; masks end on the latent grid the sampler blends with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import conditioning as C


def rgb_frames(images: torch.Tensor, what: str = "image") -> torch.Tensor:
    """IMAGE [..., H, W, C] 0..1 -> [..., H, W, 3]: C = 1 (gray) repeated, C = 4 (RGBA) without its alpha.

    The one place the pack turns ComfyUI's IMAGEs into RGB (first_frame, frames_to_video, fit_image); ``what``
    names the input in the errors."""
    if images.ndim < 3:
        raise ValueError(f"{what} must be an IMAGE [frames, H, W, C], got shape {tuple(images.shape)}")
    if images.ndim == 4 and images.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch: connect an IMAGE with at least one frame")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what} contains NaN or infinite values: the node that made it went wrong; check its inputs")
    channels = images.shape[-1]
    if channels == 1:
        return images.expand(*images.shape[:-1], 3)  # gray -> RGB
    if channels in (3, 4):
        return images[..., :3]  # RGBA -> RGB: the alpha is dropped
    raise ValueError(
        f"{what}: IMAGE must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {channels}; convert it to RGB first"
    )


def cover_crop(h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """How an h x w image is fitted to height x width: scaled to (nh, nw) to cover it, then cropped at (top,
    left). Returns (nh, nw, top, left)."""
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    return nh, nw, (nh - height) // 2, (nw - width) // 2


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[..., C, H, W] 0..1 (C = 1, 3 or 4, see rgb_frames) -> [..., 3, height, width] in -1..1: scaled to cover,
    centre-cropped."""
    if image.ndim < 3:
        raise ValueError(f"expected an image [..., 3, H, W], got shape {tuple(image.shape)}")
    image = rgb_frames(image.movedim(-3, -1)).movedim(-1, -3)  # [..., C, H, W] -> [..., 3, H, W]
    lead = image.shape[:-3]
    x = image.reshape(-1, *image.shape[-3:]).float()
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        nh, nw, top, left = cover_crop(h, w, height, width)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        x = x[..., top : top + height, left : left + width]
    return (x * 2 - 1).reshape(*lead, 3, height, width)


def frames_to_video(
    images: torch.Tensor, width: int, height: int, frames: int, *, resample: bool = False, what: str = "video"
) -> torch.Tensor:
    """IMAGE frames [N, H, W, C] 0..1 -> video [1, 3, frames, height, width] in -1..1 (each frame scaled to
    cover, centre-cropped). N must equal ``frames`` unless ``resample`` picks evenly spread frames. C is 1, 3 or 4
    (rgb_frames)."""
    images = rgb_frames(images, what)
    index = C.frame_indices(images.shape[0], frames, resample, what)
    x = images[index].movedim(-1, 1)  # [T, H, W, 3] -> [T, 3, H, W]
    return fit_image(x, width, height).transpose(0, 1)[None]  # [T, 3, H, W] -> [1, 3, T, H, W]


def join_clips(first: torch.Tensor, second: torch.Tensor, overlap: int) -> torch.Tensor:
    """Two clips IMAGE [N, H, W, C] 0..1 -> one: ``second`` continues ``first`` from its last ``overlap`` frames
    (continuation_conditioning), so those frames are cross-faded, the second clip's weight rising from 0 by
    1/overlap per frame, as EasyAnimate's long-video loop joins its segments. ``first`` is scaled to cover
    ``second``'s size and centre-cropped when they differ (the fit the continuation applied to its frames)."""
    first, second = rgb_frames(first, "first clip").float(), rgb_frames(second, "second clip").float()
    if overlap < 0:
        raise ValueError(f"overlap must be 0 or more frames, got {overlap}")
    if overlap > min(first.shape[0], second.shape[0]):
        raise ValueError(
            f"overlap={overlap} is longer than a clip ({first.shape[0]} and {second.shape[0]} frames); lower overlap"
        )
    h, w = second.shape[1:3]
    if tuple(first.shape[1:3]) != (h, w):
        first = (fit_image(first.movedim(-1, 1), w, h).movedim(1, -1) + 1) / 2  # fit_image gives -1..1
    ratio = (torch.arange(overlap, dtype=torch.float32) / max(overlap, 1)).view(-1, 1, 1, 1)
    kept = first.shape[0] - overlap
    blended = first[kept:] * (1 - ratio) + second[:overlap] * ratio
    return torch.cat([first[:kept], blended, second[overlap:]]).clamp(0, 1)


def fit_mask(
    mask: torch.Tensor, width: int, height: int, frames: int, *, resample: bool = False, stretch: bool = False
) -> torch.Tensor:
    """MASK [N, H, W], [H, W] or [N, 1, H, W] (1 = regenerate; one mask for every frame, or one per frame) ->
    binary mask [1, 1, frames, height, width], scaled to cover and centre-cropped like the video, or with
    ``stretch`` scaled to the size whatever its aspect ratio and not binarised (KSampler's way with a latent's
    noise mask: a value between 0 and 1 blends the regenerated and the kept latents)."""
    shape = tuple(mask.shape)
    mask = mask[:, 0] if mask.ndim == 4 and mask.shape[1] == 1 else mask  # [N, 1, H, W] -> [N, H, W]
    mask = mask[None] if mask.ndim == 2 else mask
    if mask.ndim != 3:
        raise ValueError(
            f"mask must be [frames, H, W] (a MASK), got {shape}: connect a MASK (e.g. from Load Image, or "
            "Convert Image to Mask)"
        )
    if mask.shape[0] == 1:
        index = torch.zeros(frames, dtype=torch.long)
    else:
        index = C.frame_indices(mask.shape[0], frames, resample, "mask")
    m = mask[index].float()[:, None].expand(-1, 3, -1, -1)  # [T, H, W] -> [T, 3, H, W] for fit_image
    if stretch:  # as ComfyUI's prepare_mask: bilinear to the size, and soft values stay soft (0.5 half-regenerates)
        m = F.interpolate(m[:, :1], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        return m.clamp(0, 1)[None, None]
    m = fit_image(m, width, height)[:, 0]  # [T, H, W] in -1..1
    return (m > 0).float()[None, None]  # > 0.5 in 0..1, binarised like diffusers' mask processor


def check_mask_aspect(mask_hw: tuple[int, int], video_hw: tuple[int, int], width: int, height: int) -> None:
    """Raise ValueError when a mask would land off its video. fit_image scales each to cover the generation size
    and centre-crops, so they stay aligned when the mask has the video's aspect ratio, or the generation size's
    (then it is already in the output's frame, uncropped); other shapes are cropped differently."""
    (mh, mw), (vh, vw) = mask_hw, video_hw
    if any(abs((mw / mh) / ratio - 1) <= 0.01 for ratio in (vw / vh, width / height)):
        return
    raise ValueError(
        f"the mask is {mw}x{mh} but the video is {vw}x{vh}: give a mask of the video's aspect ratio (resize both the "
        f"same way), or one of the generation size {width}x{height}"
    )


def on_latent_grid(keep: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """A pixel mask [1, 1, T, H, W] (1 = regenerate) -> the keep mask [B, 1, t, h, w] the sampler blends with."""
    b, _, t, h, w = latent_shape
    return F.interpolate(keep, size=(t, h, w), mode="trilinear", align_corners=True).expand(b, -1, -1, -1, -1)
