"""End-to-end generation on loaded models: the engine's Python API, used by the CLI and the tests.

``generate`` reproduces the EasyAnimate pipelines' order of random draws (initial noise first, then the
noise augmentation of kept frames, then any ancestral steps, all from one CPU generator seeded with the
seed), so the same seed gives the same video as diffusers' pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import builders
from . import conditioning as C
from .configs import Variant
from .frames import fit_image, frames_to_video
from .handles import TextEncoderHandle, TransformerHandle, VAEHandle
from .memory import MemoryPolicy, on_device
from .runner import (
    check_device,
    check_dtype,
    check_inductor_device,
    check_speed_options,
    encode_prompts,
    run_sampler,
    vae_decode,
)
from .sampling import Conditioning
from .teacache import DEFAULT_THRESHOLD
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
    scheduler: str | None = None  # None: Flow for V5.1, DDIM for V5 (each version's family, as the CLI)
    shift: float | None = None
    guidance_rescale: float = 0.0
    denoise: float = 1.0
    start_image: torch.Tensor | None = None  # or K first frames [3, K, H, W], kept (continuing a clip)
    end_image: torch.Tensor | None = None
    video: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # [H, W] or [T, H, W] (T = 1 or frames) 0..1, 1 = regenerate
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


# Request tensors: the shapes each may have (the first dimension is the channels), and whether they are pixels.
_REQUEST_TENSORS = {
    "start_image": ("[3, H, W] or [3, K, H, W]", (3, 4), 3),
    "end_image": ("[3, H, W]", (3,), 3),
    "video": ("[3, T, H, W]", (4,), 3),
    "control_video": ("[3, T, H, W]", (4,), 3),
    "ref_image": ("[3, H, W]", (3,), 3),
    "mask": ("[H, W] or [T, H, W]", (2, 3), None),
    "camera": ("[6, T, H, W]", (4,), 6),
}


def check_request(req: Request) -> None:
    """The request's tensors before any work: torch floats, finite, of their documented layout, pixels and masks
    in 0..1 (8-bit 0..255 or -1..1 values are an API user's commonest slip and would give a wrong video without an
    error), and a camera embedding computed for this size and frame count (it is not resampled)."""
    for name, (layout, ndims, channels) in _REQUEST_TENSORS.items():
        x = getattr(req, name)
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Request.{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
        if x.ndim not in ndims or (channels is not None and x.shape[0] != channels) or 0 in x.shape:
            raise ValueError(f"Request.{name} must be {layout}, got shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype == torch.bool):
            raise ValueError(f"Request.{name} is {x.dtype}; give floats in 0..1 (8-bit pixels: x.float() / 255)")
        x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError(f"Request.{name} contains NaN or infinite values")
        low, high = x.min().item(), x.max().item()
        if name != "camera" and (low < -0.05 or high > 1.05):
            raise ValueError(
                f"Request.{name} has values from {low:.3g} to {high:.3g} but must be in 0..1 "
                "(8-bit pixels: divide by 255; -1..1 pixels: (x + 1) / 2)"
            )
    if req.camera is not None and tuple(req.camera.shape[1:]) != (req.frames, req.height, req.width):
        raise ValueError(
            f"Request.camera is {tuple(req.camera.shape)} but the video is {req.frames} frames of "
            f"{req.width}x{req.height}: compute it with camera.plucker_embedding(poses, {req.width}, {req.height}) "
            f"for {req.frames} poses"
        )


def fit_video(video: torch.Tensor, width: int, height: int, frames: int, what: str = "input video") -> torch.Tensor:
    """[3, T, H, W] 0..1 -> [1, 3, frames, height, width] -1..1 (too few frames is an error)."""
    return frames_to_video(_first_frames(video, frames, what), width, height, frames)


def _first_frames(video: torch.Tensor, frames: int, what: str) -> torch.Tensor:
    """The first ``frames`` frames of a [3, T, H, W] video as IMAGE frames [frames, H, W, 3]."""
    if video.shape[1] < frames:
        raise ValueError(f"the {what} has {video.shape[1]} frames but {frames} are requested; lower frames")
    return video[:, :frames].permute(1, 2, 3, 0)


def build_conditioning(
    models: Models,
    req: Request,
    *,
    device: torch.device,
    offload: torch.device,
    memory: MemoryPolicy = NO_OFFLOAD,
    tile=None,
) -> Conditioning:
    """The request's conditioning, built by the same functions as the nodes' (``builders``)."""
    cfg = models.transformer.config
    variant, (w, h, n) = cfg.variant, (req.width, req.height, req.frames)
    vh = VAEHandle(models.vae, next(models.vae.parameters()).dtype, memory)
    place = dict(device=device, offload=offload, tile=tile)
    if req.mask is not None and req.video is None:
        raise ValueError("an inpaint mask needs an input video")
    if req.ref_image is not None and variant not in (Variant.CONTROL, Variant.CAMERA):
        raise ValueError(f"a reference image needs a Control or Control-Camera checkpoint; this one is {variant.value}")
    if req.start_image is not None or req.end_image is not None:
        if variant != Variant.INP:
            raise ValueError(
                f"start/end images (and continuing a clip) need an InP checkpoint; this one is {variant.value}"
            )
        if req.video is not None:
            raise ValueError("give either start/end images or an input video, not both")
        if req.denoise < 1.0:
            raise ValueError("denoise below 1 needs an input video (video-to-video)")
        return builders.image_to_video_conditioning(
            vh, cfg, req.start_image, req.end_image, w, h, n, noise_aug_strength=req.noise_aug_strength,
            seed=req.seed, **place,
        )  # fmt: skip
    if req.video is None and req.denoise < 1.0:
        raise ValueError("denoise below 1 needs an input video (video-to-video)")
    if req.video is not None and req.mask is None and req.denoise >= 1.0:
        raise ValueError("an input video with denoise 1 would be ignored; lower denoise or add a mask")
    if variant in (Variant.CONTROL, Variant.CAMERA):
        if req.mask is not None:
            raise ValueError(
                f"an inpaint mask needs an InP or T2V checkpoint; this one is {variant.value}, which redraws the whole "
                "input video by denoise (lower denoise to keep more of it)"
            )
        return _control_conditioning(vh, cfg, req, place)
    if req.control_video is not None or req.camera is not None:
        raise ValueError(f"a control video or camera path needs a Control checkpoint; this one is {variant.value}")
    if req.video is None:
        return Conditioning()  # InP checkpoints get zero conditioning channels in sampler_conditioning
    frames = _first_frames(req.video, n, "input video")
    mask = req.mask[:n] if req.mask is not None and req.mask.ndim == 3 else req.mask
    cond, _ = builders.inpaint_video_conditioning(
        vh, cfg, frames, mask, w, h, n, noise_aug_strength=req.noise_aug_strength, seed=req.seed, **place
    )
    return cond


def _control_conditioning(vh: VAEHandle, cfg, req: Request, place: dict) -> Conditioning:
    """Control / Control-Camera: control video (zeros without one) or camera path, optional ref image, and the
    input video's latents for video-to-video."""
    w, h, n = req.width, req.height, req.frames
    control = fit_video(req.control_video, w, h, n, "control video") if req.control_video is not None else None
    ref = fit_image(req.ref_image, w, h)[None] if req.ref_image is not None else None
    camera = req.camera[None] if req.camera is not None else None
    latent_size = C.latent_shape(vh.vae, w, h, n)[2:]
    with on_device(vh.vae, place["device"], place["offload"], vh.memory):
        latents = C.control_latents(vh.vae, cfg, control, ref, latent_size, camera=camera, tile=place["tile"])
        init = None
        if req.video is not None:  # video-to-video on a Control checkpoint starts from the video's latents
            init = C.encode_mode(vh.vae, fit_video(req.video, w, h, n), tile=place["tile"]).float().cpu()
    return Conditioning(control=latents.float().cpu(), init_latents=init)


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
    """Scaled latents [1, C, t, h, w] -> frames [T, H, W, 3] float32 in 0..1 on the CPU (decoded on ``device``,
    default the VAE's)."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    vh = VAEHandle(vae, next(vae.parameters()).dtype, memory)
    return vae_decode(vh, latents, device, torch.device(offload), tile=tile, progress=progress)


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
    attention: str = "sdpa",
    compile: str | None = None,
    teacache: float = DEFAULT_THRESHOLD,
    fp8_matmul: bool = False,
    stats: dict | None = None,
):
    """Generate a video: frames [T, H, W, 3] in 0..1 (``output='latents'`` returns the scaled latents).

    Speed options as on the nodes: ``attention`` backend, ``compile`` (a torch.compile backend for the blocks,
    not with block swap), ``teacache`` threshold (default: the official 0.08; 0 = off and exact), ``fp8_matmul`` (fp8 GEMMs, memory mode fp8);
    ``stats`` receives TeaCache's skipped-call count.

    ``memory`` places the models for each stage (see memory.py): with an offloading policy each model is on
    ``device`` only while it works and returns to ``offload`` afterwards; block swap streams blocks.
    """
    if output not in ("frames", "latents"):
        raise ValueError(f"output must be 'frames' or 'latents', got {output!r}")
    C.check_size(req.width, req.height, req.frames)
    check_request(req)
    check_speed_options(memory, attention, compile, teacache, fp8_matmul)
    check_device(device), check_device(offload, "offload"), check_dtype(dtype)
    if compile == "inductor":
        check_inductor_device(device)
    if models.text_encoder is None:
        raise ValueError("generation from a prompt needs a text encoder")
    device, offload = torch.device(device), torch.device(offload)
    te = TextEncoderHandle(models.text_encoder, dtype, memory)
    negative = req.negative_prompt if req.cfg > 1 else None  # without CFG the negative is never read
    embeds = encode_prompts(te, req.prompt, negative, device, offload)
    shape = C.latent_shape(models.vae, req.width, req.height, req.frames)
    cond = build_conditioning(models, req, device=device, offload=offload, memory=memory, tile=tile)
    cond = builders.sampler_conditioning(models.transformer.config, shape, cond)
    scheduler = req.scheduler or ("DDIM" if models.transformer.config.version == "V5" else "Flow")
    handle = TransformerHandle(
        models.transformer, dtype, memory, scheduler_config=models.scheduler_config, attention=attention,
        compile=compile, compiled=models.extras.setdefault(("compiled", compile), {}) if compile else {},
        fp8_matmul=fp8_matmul,
    )  # fmt: skip
    latents = run_sampler(
        handle, embeds, shape, steps=req.steps, cfg=req.cfg, seed=req.seed, scheduler=scheduler,
        shift=req.shift, guidance_rescale=req.guidance_rescale, denoise=req.denoise, cond=cond, device=device,
        offload=offload, progress=progress, should_stop=should_stop, teacache=teacache, stats=stats,
    )  # fmt: skip
    if output == "latents":
        return latents
    return decode(models.vae, latents, tile=tile, memory=memory, device=device, offload=offload)
