"""End-to-end generation on loaded models: the engine's Python API, used by the CLI and the tests.

``generate`` reproduces the EasyAnimate pipelines' order of random draws (initial noise first, then the
noise augmentation of kept frames, then any ancestral steps, all from one CPU generator seeded with the
seed), so the same seed gives the same video as diffusers' pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import conditioning as C
from .configs import Variant
from .memory import MemoryPolicy, on_device, transformer_placement
from .sampling import Conditioning, initial_noise, sample
from .schedulers import build_scheduler
from .transformer import EasyAnimateTransformer
from .vae import MagvitVAE

NO_OFFLOAD = MemoryPolicy()


@dataclass(frozen=True)
class Request:
    """What to generate. Images are [3, H, W] / videos [3, T, H, W] in 0..1 at any size (resized here)."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 672
    height: int = 384
    frames: int = 49
    steps: int = 50
    cfg: float = 6.0
    seed: int = 43
    scheduler: str = "Flow"
    shift: float | None = None
    guidance_rescale: float = 0.0
    denoise: float = 1.0
    start_image: torch.Tensor | None = None
    end_image: torch.Tensor | None = None
    video: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # [T, H, W] 0..1, 1 = regenerate
    control_video: torch.Tensor | None = None
    ref_image: torch.Tensor | None = None
    camera: torch.Tensor | None = None  # Plücker embedding [6, T, H, W] at the generation size
    noise_aug_strength: float = 0.0563


@dataclass
class Models:
    transformer: EasyAnimateTransformer
    vae: MagvitVAE
    text_encoder: object | None = None  # easyanimate_core.text.TextEncoder
    scheduler_config: dict | None = None
    extras: dict = field(default_factory=dict)


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[..., 3, H, W] 0..1 -> [..., 3, height, width] in -1..1: scaled to cover, centre-cropped."""
    lead = image.shape[:-3]
    x = image.reshape(-1, *image.shape[-3:]).float()
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[..., top : top + height, left : left + width]
    return (x * 2 - 1).reshape(*lead, 3, height, width)


def fit_video(video: torch.Tensor, width: int, height: int, frames: int) -> torch.Tensor:
    """[3, T, H, W] 0..1 -> [1, 3, frames, height, width] -1..1 (too few frames is an error)."""
    if video.shape[1] < frames:
        raise ValueError(f"the input video has {video.shape[1]} frames but {frames} are requested; lower frames")
    x = fit_image(video[:, :frames].transpose(0, 1), width, height)  # [T, 3, H, W]
    return x.transpose(0, 1)[None]


def build_conditioning(models: Models, req: Request, latent_size, generator, tile=None) -> Conditioning:
    cfg, vae = models.transformer.config, models.vae
    w, h, n = req.width, req.height, req.frames
    variant = cfg.variant
    video = fit_video(req.video, w, h, n) if req.video is not None else None
    mask = None
    if req.mask is not None:
        if video is None:
            raise ValueError("an inpaint mask needs an input video")
        mask = (F.interpolate(req.mask[None, None].float(), size=(n, h, w), mode="nearest") > 0.5).float()
    if req.start_image is not None or req.end_image is not None:
        if variant != Variant.INP:
            raise ValueError(f"start/end images need an InP checkpoint; this one is {variant.value}")
        if video is not None:
            raise ValueError("give either start/end images or an input video, not both")
        start = fit_image(req.start_image, w, h)[None] if req.start_image is not None else None
        end = fit_image(req.end_image, w, h)[None] if req.end_image is not None else None
        video, mask = C.image_to_video(start, end, n)
    init = None
    if req.denoise < 1.0:
        if video is None:
            raise ValueError("denoise below 1 needs an input video (video-to-video)")
        init = C.encode_mode(models.vae, video, tile=tile)
    if video is not None and mask is None and req.denoise >= 1.0:
        raise ValueError("an input video with denoise 1 would be ignored; lower denoise or add a mask")
    if variant == Variant.INP:
        inpaint = C.inpaint_latents(
            vae,
            cfg,
            video,
            mask,
            latent_size,
            noise_aug_strength=req.noise_aug_strength,
            generator=generator,
            tile=tile,
        )
        return Conditioning(inpaint=inpaint, init_latents=init)
    if variant in (Variant.CONTROL, Variant.CAMERA):
        control = fit_video(req.control_video, w, h, n) if req.control_video is not None else None
        ref = fit_image(req.ref_image, w, h)[None] if req.ref_image is not None else None
        camera = req.camera[None] if req.camera is not None else None
        return Conditioning(
            control=C.control_latents(vae, cfg, control, ref, latent_size, camera=camera, tile=tile), init_latents=init
        )
    if req.control_video is not None or req.camera is not None:
        raise ValueError(f"a control video or camera path needs a Control checkpoint; this one is {variant.value}")
    keep = None
    if mask is not None:
        keep = F.interpolate(mask, size=latent_size, mode="trilinear", align_corners=True)
    return Conditioning(init_latents=init, keep_mask=keep)


def decode(
    vae: MagvitVAE,
    latents: torch.Tensor,
    tile=None,
    progress=None,
    *,
    memory: MemoryPolicy = NO_OFFLOAD,
    device: torch.device | str | None = None,
    offload: torch.device | str = "cpu",
) -> torch.Tensor:
    """Scaled latents [1, C, t, h, w] -> frames [T, H, W, 3] float32 in 0..1 (on ``device``, default the VAE's)."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    with on_device(vae, device, torch.device(offload), memory):
        video = vae.decode(latents.to(device) / vae.scaling_factor, tile=tile, progress=progress)
    return (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()


def generate(
    models: Models,
    req: Request,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    tile=None,
    output: str = "frames",
    memory: MemoryPolicy = NO_OFFLOAD,
    offload: torch.device | str = "cpu",
):
    """Generate a video: frames [T, H, W, 3] in 0..1 (``output='latents'`` returns the scaled latents).

    ``memory`` places the models for each stage (see memory.py): with an offloading policy each model is on
    ``device`` only while it works and returns to ``offload`` afterwards; block swap streams blocks.
    """
    C.check_size(req.width, req.height, req.frames)
    if models.text_encoder is None:
        raise ValueError("generation from a prompt needs a text encoder")
    device, offload = torch.device(device), torch.device(offload)
    with ExitStack() as stack:
        for module in models.text_encoder.modules():
            stack.enter_context(on_device(module, device, offload, memory))
        text = models.text_encoder.encode([req.prompt], device=device)
        negative = models.text_encoder.encode([req.negative_prompt], device=device) if req.cfg > 1 else None
    shape = C.latent_shape(models.vae, req.width, req.height, req.frames)
    noise, generator = initial_noise(shape, req.seed)
    with on_device(models.vae, device, offload, memory):
        cond = build_conditioning(models, req, shape[2:], generator, tile=tile)
    scheduler = build_scheduler(req.scheduler, models.scheduler_config, req.shift)
    with transformer_placement(models.transformer, device, offload, memory) as run_blocks:
        latents = sample(
            models.transformer,
            scheduler,
            text,
            negative,
            noise,
            steps=req.steps,
            cfg=req.cfg,
            guidance_rescale=req.guidance_rescale,
            denoise=req.denoise,
            cond=cond,
            generator=generator,
            device=device,
            dtype=dtype,
            progress=progress,
            should_stop=should_stop,
            run_blocks=run_blocks,
        )
    if output == "latents":
        return latents
    return decode(models.vae, latents, tile=tile, memory=memory, device=device, offload=offload)
