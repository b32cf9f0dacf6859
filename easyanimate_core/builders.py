"""Conditioning builders for the nodes: ComfyUI-style IMAGE / MASK inputs -> sampling.Conditioning.

Each builder checks the checkpoint variant first (naming the variant a feature needs), fits frames and
masks to the generation size, and runs the VAE under the handle's memory policy.
"""

from __future__ import annotations

import torch

from . import conditioning as C
from .configs import TransformerConfig, Variant
from .frames import check_mask_aspect, fit_image, fit_mask, frames_to_video, on_latent_grid, rgb_frames
from .handles import VAEHandle
from .memory import on_device
from .sampling import Conditioning, initial_noise
from .vae import Progress, VAETiling

VAE_SPATIAL, VAE_TEMPORAL = 8, 4  # compression of the EasyAnimate V5/V5.1 MagViT VAE


def latent_shape_for(cfg: TransformerConfig, width: int, height: int, frames: int, batch: int = 1) -> tuple[int, ...]:
    """The latent shape [B, C, t, h, w] sampled for a video of ``frames`` x ``height`` x ``width``."""
    C.check_size(width, height, frames)
    return (batch, cfg.out_channels, (frames - 1) // VAE_TEMPORAL + 1, height // VAE_SPATIAL, width // VAE_SPATIAL)


def check_video_latent(latents: torch.Tensor, channels: int, where: str, fix: str) -> None:
    """Raise ValueError when a LATENT's samples are not EasyAnimate video latents [B, channels, T, H, W]: an image
    latent (Empty Latent Image, 4-D) or another model's video latent (another channel count), saying ``fix``."""
    if latents.ndim == 5 and latents.shape[1] == channels:
        return
    kind = "an image latent" if latents.ndim == 4 else "not an EasyAnimate video latent"
    raise ValueError(
        f"{where} got a LATENT of shape {list(latents.shape)}, {kind} (EasyAnimate's are [B, {channels}, "
        f"(frames-1)/4+1, height/8, width/8]); it was made by another model's nodes: {fix}"
    )


def video_size_of(latents: torch.Tensor) -> tuple[int, int, int]:
    """(width, height, frames) of the video that latents [B, C, t, h, w] decode to."""
    if latents.ndim != 5:
        raise ValueError(
            f"expected video latents [B, C, T, H, W] (from EasyAnimate VAE Encode), got shape {tuple(latents.shape)}"
        )
    _, _, t, h, w = latents.shape
    return w * VAE_SPATIAL, h * VAE_SPATIAL, (t - 1) * VAE_TEMPORAL + 1


def sampler_conditioning(
    cfg: TransformerConfig,
    latent_shape: tuple[int, ...],
    cond: Conditioning | None = None,
    init_latents: torch.Tensor | None = None,
) -> Conditioning:
    """``cond`` completed for a run of ``latent_shape``: the extra input channels of InP and Control
    checkpoints are zeros when not given (plain text-to-video, as the pipelines do), tensors follow the
    latents' batch, and ``init_latents`` (video-to-video) are added."""
    cond = cond or Conditioning()
    b, _, t, h, w = latent_shape
    extra = cfg.in_channels - cfg.out_channels  # channels the checkpoint takes besides the latents
    if cond.inpaint is not None and cfg.variant != Variant.INP:
        raise ValueError(
            f"start/end image conditioning needs an EasyAnimate InP checkpoint; this one is {cfg.variant.value}"
        )
    if cfg.variant == Variant.CAMERA and cond.control is None:
        raise ValueError("this Control-Camera checkpoint needs a camera path (presets or a pose file)")
    inpaint, control = cond.inpaint, cond.control
    if cfg.variant == Variant.INP and inpaint is None:
        inpaint = torch.zeros(b, extra, t, h, w)
    if cfg.variant == Variant.CONTROL and control is None:
        control = torch.zeros(b, extra, t, h, w)

    def batched(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or x.shape[0] == b:
            return x
        if x.shape[0] != 1:
            raise ValueError(f"conditioning for a batch of {x.shape[0]} cannot be used for a batch of {b}")
        return x.expand(b, *x.shape[1:])

    if init_latents is not None and tuple(init_latents.shape) != tuple(latent_shape):
        raise ValueError(f"input latents {tuple(init_latents.shape)} do not match the run's {tuple(latent_shape)}")
    return Conditioning(
        inpaint=batched(inpaint),
        control=batched(control),
        init_latents=init_latents if init_latents is not None else cond.init_latents,
        keep_mask=cond.keep_mask,
    )


def require_inp(cfg: TransformerConfig, feature: str) -> None:
    if cfg.variant != Variant.INP:
        raise ValueError(
            f"{feature} needs an EasyAnimate InP checkpoint (e.g. EasyAnimateV5.1-12b-zh-InP); "
            f"this one is {cfg.variant.value}"
        )


def image_to_video_conditioning(
    vh: VAEHandle,
    cfg: TransformerConfig,
    start: torch.Tensor | None,
    end: torch.Tensor | None,
    width: int,
    height: int,
    frames: int,
    *,
    noise_aug_strength: float,
    seed: int,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Progress | None = None,
) -> Conditioning:
    """Start and/or end image [3, H, W] 0..1 (any size: scaled to cover, centre-cropped) -> the InP
    conditioning of a ``frames`` x ``height`` x ``width`` video. ``start`` may also be K frames [3, K, H, W]
    that the video begins with (continuing a clip: see ``continuation_conditioning``). ``progress(done,
    total)`` follows the VAE encode (the nodes' progress bar, which also raises on Cancel).

    The noise augmentation of the kept frames draws from a CPU generator seeded with ``seed`` after the
    draw of the initial noise, as in the EasyAnimate pipelines: with the sampler's seed, the run equals
    ``pipeline.generate``'s."""
    require_inp(cfg, "image-to-video")
    shape = latent_shape_for(cfg, width, height, frames)
    if frames == 1 and start is not None and end is not None:  # both would be kept on the one frame
        raise ValueError(
            "frames=1 has room for one image: connect only start_image or end_image, or set frames to 5 or more"
        )
    _, generator = initial_noise(shape, seed)  # continue the stream after the sampler's initial noise
    first = None
    if start is not None and start.ndim == 4:  # K frames [3, K, H, W] -> [1, 3, K, H, W] -1..1
        first = fit_image(start.transpose(0, 1), width, height).transpose(0, 1)[None]
    elif start is not None:
        first = fit_image(start, width, height)[None]  # [1, 3, H, W] -1..1
    last = fit_image(end, width, height)[None] if end is not None else None
    video, mask = C.image_to_video(first, last, frames)  # [1, 3, T, H, W], [1, 1, T, H, W]
    with on_device(vh.vae, device, offload, vh.memory):
        inpaint = C.inpaint_latents(
            vh.vae,
            cfg,
            video.to(device),
            mask.to(device),
            shape[2:],
            noise_aug_strength=noise_aug_strength,
            generator=generator,
            tile=tile,
            progress=progress,
        )
    return Conditioning(inpaint=inpaint.float().cpu())


def check_continuation(count: int, overlap: int, frames: int, has_end: bool) -> None:
    """Raise ValueError unless a ``count``-frame clip can be continued by a ``frames``-frame one that keeps
    ``overlap`` of its frames (and an end image when ``has_end``) and generates at least one frame."""
    if overlap < 1:
        raise ValueError(f"overlap must be at least 1 frame, got {overlap}")
    if count < overlap:
        raise ValueError(f"the video to continue has {count} frames, fewer than overlap={overlap}; lower overlap")
    if overlap + has_end >= frames:
        raise ValueError(
            f"overlap={overlap}{' plus the end image' if has_end else ''} leaves none of the {frames} frames "
            f"to generate: raise frames to {4 * -(-(overlap + has_end) // 4) + 1} or more, or lower overlap"
        )


def continuation_conditioning(
    vh: VAEHandle,
    cfg: TransformerConfig,
    clip: torch.Tensor,
    overlap: int,
    end: torch.Tensor | None,
    width: int,
    height: int,
    frames: int,
    **kw,
) -> Conditioning:
    """InP conditioning of a video that continues ``clip`` (IMAGE frames [N, H, W, C] 0..1): it begins with the
    clip's last ``overlap`` frames, kept, and the rest is generated (optionally ending on ``end`` [3, H, W]).
    This is the official long-video loop's step (``partial_video_length`` / ``overlap_video_length`` in
    EasyAnimate's predict_i2v.py); join the clips with ``frames.join_clips``. ``kw`` as image_to_video_conditioning.
    """
    require_inp(cfg, "continuing a video")
    clip = rgb_frames(clip, "video to continue")
    count = clip.shape[0]
    check_continuation(count, overlap, frames, end is not None)
    tail = clip[count - overlap :].permute(3, 0, 1, 2)  # [3, K, H, W]
    return image_to_video_conditioning(vh, cfg, tail, end, width, height, frames, **kw)


# --- video-to-video with a mask, control video, camera path (the control nodes) --------------------


def in_stages(progress: Progress | None, stages: int) -> Progress | None:
    """``progress`` for ``stages`` VAE encodes in a row, as one bar: each encode fills the next equal share (a
    count restarting after an encode reached its total starts the next share; one restarting before that is the
    same encode retried in smaller tiles after running out of memory, and stays in its share)."""
    if progress is None or stages <= 1:
        return progress
    stage, last, finished = 0, 0, False

    def report(done: int, total: int) -> None:
        nonlocal stage, last, finished
        if done <= last and finished:
            stage = min(stage + 1, stages - 1)
        last, finished = done, done >= total
        progress(stage * total + done, stages * total)

    return report


def inpaint_video_conditioning(
    vh: VAEHandle,
    cfg: TransformerConfig,
    video: torch.Tensor,
    mask: torch.Tensor | None,
    width: int,
    height: int,
    frames: int,
    *,
    resample: bool = False,
    noise_aug_strength: float,
    seed: int,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Progress | None = None,
) -> tuple[Conditioning, torch.Tensor]:
    """Video-to-video with an optional inpaint mask -> (conditioning, the video's latents [1, C, t, h, w]).

    ``video`` is IMAGE frames [N, H, W, C] 0..1; ``mask`` a MASK (1 = regenerate) or None. InP checkpoints get
    the masked-video latents (as pipeline.generate); T2V checkpoints a keep mask on the latent grid, with the
    video's latents blended back into the kept region after every step. The latents start the Sampler when
    its denoise is below 1. The noise augmentation continues the sampler's ``seed`` stream, as in I2V.
    ``progress(done, total)`` follows each VAE encode (the video's, then the masked video's)."""
    if cfg.variant not in (Variant.INP, Variant.T2V):
        raise ValueError(
            f"video inpainting needs an EasyAnimate InP or T2V checkpoint; this one is {cfg.variant.value}: "
            "for Control checkpoints use EasyAnimate Control Video (and VAE Encode for video-to-video)"
        )
    shape = latent_shape_for(cfg, width, height, frames)
    _, generator = initial_noise(shape, seed)  # continue the stream after the sampler's initial noise
    pixels = frames_to_video(video, width, height, frames, resample=resample, what="input video")
    keep = fit_mask(mask, width, height, frames, resample=resample) if mask is not None else None
    if mask is not None:  # after fit_mask has checked the mask's shape
        check_mask_aspect(tuple(mask.shape[-2:]), tuple(video.shape[1:3]), width, height)
    masked = cfg.variant == Variant.INP and keep is not None and not bool((keep > 0.5).all())  # a second encode
    progress = in_stages(progress, 2 if masked else 1)
    with on_device(vh.vae, device, offload, vh.memory):
        init = C.encode_mode(vh.vae, pixels.to(device), tile=tile, progress=progress).float().cpu()
        inpaint = None
        if cfg.variant == Variant.INP:
            inpaint = C.inpaint_latents(
                vh.vae,
                cfg,
                pixels.to(device),
                None if keep is None else keep.to(device),
                shape[2:],
                noise_aug_strength=noise_aug_strength,
                generator=generator,
                tile=tile,
                progress=progress,
            )
    if inpaint is not None:
        return Conditioning(inpaint=inpaint.float().cpu(), init_latents=init), init
    keep_mask = None if keep is None else on_latent_grid(keep, shape)
    return Conditioning(init_latents=init, keep_mask=keep_mask), init


def noise_mask_conditioning(
    cond: Conditioning, noise_mask: torch.Tensor, latents: torch.Tensor, latent_shape: tuple[int, ...]
) -> Conditioning:
    """``cond`` with a LATENT's ``noise_mask`` (ComfyUI's Set Latent Noise Mask: [N, 1, H, W] or [N, H, W],
    1 = regenerate, one mask or one per video frame) as its keep mask: like KSampler, each step puts back the
    latents' own content, noised to the step's level, where the mask is 0, and blends the two in proportion
    where it lies between (a soft or feathered mask, Grow Mask's tapered corners); a mask of another size is
    stretched to the video's, as KSampler does. For a batch of B videos, B x frames masks are one per frame of
    each video in turn: what Repeat Latent Batch makes of a latent with a per-frame mask."""
    if cond.keep_mask is not None:
        raise ValueError(
            "the latent has a noise mask and the conditioning (EasyAnimate Inpaint Video) has a mask too: use one"
        )
    width, height, frames = video_size_of(latents)
    count = 1 if noise_mask.ndim == 2 else noise_mask.shape[0]  # fit_mask checks the layout
    batch = latent_shape[0]
    if batch > 1 and count == batch * frames:  # per-frame masks repeated with the latents (never also == frames)
        parts = [(noise_mask[i * frames : (i + 1) * frames], (1, *latent_shape[1:])) for i in range(batch)]
    elif count in (1, frames):
        parts = [(noise_mask, latent_shape)]  # one mask for every video
    else:
        per_batch = f", or {batch * frames} (one per frame of each of the {batch} videos)" if batch > 1 else ""
        raise ValueError(
            f"the noise mask has {count} frames but the latent holds a {frames}-frame video: give one mask for all "
            f"frames or {frames} (one per frame){per_batch}"
        )
    keep = torch.cat(
        [on_latent_grid(fit_mask(m.float(), width, height, frames, stretch=True), shape) for m, shape in parts]
    )
    return Conditioning(inpaint=cond.inpaint, control=cond.control, init_latents=latents, keep_mask=keep)


def control_video_conditioning(
    vh: VAEHandle,
    cfg: TransformerConfig,
    control: torch.Tensor,
    ref: torch.Tensor | None,
    width: int,
    height: int,
    frames: int,
    *,
    resample: bool = False,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Progress | None = None,
) -> Conditioning:
    """Control video (IMAGE frames [N, H, W, C] 0..1: pose, depth, edges, trajectory heat-maps) and an optional
    ref image [3, H, W] 0..1 -> the Control checkpoint's conditioning (conditioning.control_latents);
    ``progress(done, total)`` follows each VAE encode."""
    if cfg.variant == Variant.CAMERA:
        raise ValueError(
            "this is a Control-Camera checkpoint, steered by a camera path rather than a control video: use "
            "EasyAnimate Camera Control, or load a Control checkpoint (e.g. EasyAnimateV5.1-12b-zh-Control)"
        )
    if cfg.variant != Variant.CONTROL:
        raise ValueError(
            f"a control video needs an EasyAnimate Control checkpoint (e.g. EasyAnimateV5.1-12b-zh-Control); "
            f"this one is {cfg.variant.value}"
        )
    if ref is not None:
        C.check_ref_image(cfg)
    shape = latent_shape_for(cfg, width, height, frames)
    video = frames_to_video(control, width, height, frames, resample=resample, what="control video")
    ref_px = fit_image(ref, width, height)[None] if ref is not None else None  # [1, 3, H, W] -1..1
    progress = in_stages(progress, 2 if ref is not None and shape[2] > 1 else 1)  # control video, then ref image
    with on_device(vh.vae, device, offload, vh.memory):
        latents = C.control_latents(
            vh.vae,
            cfg,
            video.to(device),
            None if ref_px is None else ref_px.to(device),
            shape[2:],
            tile=tile,
            progress=progress,
        )
    return Conditioning(control=latents.float().cpu())


def camera_conditioning(
    vh: VAEHandle,
    cfg: TransformerConfig,
    poses: list,
    ref: torch.Tensor | None,
    width: int,
    height: int,
    frames: int,
    *,
    resample: bool = False,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Progress | None = None,
) -> Conditioning:
    """Camera path (camera.CameraPose per frame) and an optional ref image [3, H, W] 0..1 -> the Control-Camera
    checkpoint's conditioning: the Plücker embedding at the generation size, through conditioning.control_latents.
    ``progress(done, total)`` follows the ref image's VAE encode."""
    from . import camera

    if cfg.variant != Variant.CAMERA:
        hint = ": for a Control checkpoint use EasyAnimate Control Video" if cfg.variant == Variant.CONTROL else ""
        raise ValueError(
            "camera input needs an EasyAnimate Control-Camera checkpoint (e.g. EasyAnimateV5.1-12b-zh-Control-Camera); "
            f"this one is {cfg.variant.value}{hint}"
        )
    if ref is not None:
        C.check_ref_image(cfg)
    shape = latent_shape_for(cfg, width, height, frames)
    if len(poses) != frames:
        if not resample:
            raise ValueError(
                f"the camera path has {len(poses)} poses but {frames} frames are generated: give the camera nodes "
                f"frames={frames}, or turn resample on to spread the path over the video"
            )
        poses = camera.resample_poses(list(poses), frames)
    plucker = camera.plucker_embedding(list(poses), width, height)[None]  # [1, 6, T, H, W]
    ref_px = fit_image(ref, width, height)[None] if ref is not None else None
    with on_device(vh.vae, device, offload, vh.memory):
        latents = C.control_latents(
            vh.vae,
            cfg,
            None,
            None if ref_px is None else ref_px.to(device),
            shape[2:],
            camera=plucker.to(device),
            tile=tile,
            progress=progress,
        )
    return Conditioning(control=latents.float().cpu())
