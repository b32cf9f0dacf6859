"""EasyAnimate Sampler: the denoising run for text-, image- and video-to-video."""

from __future__ import annotations

import logging
import numbers

from ..easyanimate_core.builders import (
    check_video_latent,
    latent_shape_for,
    noise_mask_conditioning,
    sampler_conditioning,
    video_size_of,
)
from ..easyanimate_core.conditioning import check_size
from ..easyanimate_core.memory import sampling_vram_bytes
from ..easyanimate_core.runner import run_sampler
from ..easyanimate_core.sampling import Interrupted
from ..easyanimate_core.schedulers import SCHEDULER_NAMES, check_scheduler_for
from ..easyanimate_core.teacache import DEFAULT_THRESHOLD
from . import host
from .types import CATEGORY, COND, EMBEDS, MAX_SEED, MODEL, size_inputs


def _generation_size(
    latent, width: int, height: int, frames: int, denoise: float, channels: int = 16
) -> tuple[tuple, object]:
    """(latent shape source, init latents): the size comes from the latent when one is connected."""
    if latent is None:
        if denoise < 1.0:
            raise ValueError(
                "denoise below 1 needs a latent to start from (video-to-video): connect EasyAnimate VAE Encode "
                "to the latent input, or set denoise to 1"
            )
        return (width, height, frames), None
    samples = latent["samples"]
    if samples.shape[0] == 0:
        raise ValueError(
            f"the latent batch is empty (shape {list(samples.shape)}): connect a LATENT with at least one video"
        )
    check_video_latent(
        samples,
        channels,
        "the Sampler's latent input",
        "connect EasyAnimate VAE Encode's latent (video to video), or leave it unconnected for text to video",
    )
    size = video_size_of(samples)
    try:
        check_size(*size)
    except ValueError as e:
        _, _, t, h, w = samples.shape
        raise ValueError(
            f"the latent ({w}x{h}, {t} latent frames) is a {size[0]}x{size[1]} video, which cannot be sampled: {e} "
            "(the size is taken from the latent). Scale it with Upscale Latent to a width and height divisible by "
            "16, or with Upscale Latent By to even latent sides (e.g. by 2)"
        ) from e
    return size, (samples if denoise < 1.0 else None)


def _batch_index(latent) -> list[int] | None:
    """A LATENT's ``batch_index`` (set by Latent From Batch, Latent Batch, Repeat Latent Batch): which item of a
    whole batch each video is, so that it gets that item's noise, as KSampler does; None without one."""
    if latent is None or latent.get("batch_index") is None:
        return None
    index, batch = latent["batch_index"], latent["samples"].shape[0]
    if (
        not isinstance(index, (list, tuple))
        or len(index) != batch
        or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in index)
    ):
        raise ValueError(
            f"the latent's batch_index {index!r} is not one non-negative whole number per video ({batch}); it is "
            "set by Latent From Batch / Latent Batch: rebuild the latent with those nodes"
        )
    return [int(i) for i in index]  # numpy integers too


log = logging.getLogger("EasyAnimate")


class EasyAnimateVideoSampler:
    DESCRIPTION = (
        "Generates video latents with an EasyAnimate transformer. Text to video by default; connect "
        "EasyAnimate Image to Video to the conditioning input for start/end frames (InP checkpoints), or a "
        "latent from EasyAnimate VAE Encode with denoise below 1 for video to video. Shows latent previews "
        "and can be cancelled between steps."
    )
    HAS_INTERMEDIATE_OUTPUT = True  # ComfyUI sends its UI again when the node is cached (0.19+)
    CATEGORY = f"{CATEGORY}/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The generated video latents [B, C, T, H, W]; decode them with EasyAnimate VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate transformer (from a loader, optionally with LoRAs)."}),
                "embeds": (EMBEDS, {"tooltip": "Prompt embeddings from EasyAnimate Text Encode."}),
                **size_inputs("video (ignored when a latent is connected: its size is used)"),
                "steps": (
                    "INT",
                    {
                        "default": 50,
                        "min": 1,
                        "max": 1000,
                        "tooltip": "Denoising steps: 50 as in the official scripts; fewer run proportionally faster.",
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 6.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance: how strongly the prompt is followed (6 in the "
                        "official scripts). 1 or less skips the negative prompt and runs twice as fast.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 43,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Seed of the initial noise; the same seed and settings give the same video.",
                    },
                ),
                "scheduler": (
                    SCHEDULER_NAMES,
                    {
                        "default": "Flow",
                        "tooltip": "Flow for EasyAnimate V5.1 (a flow-matching model); DDIM, Euler, Euler A, "
                        "DPM++ or PNDM (at least 4 steps) for V5. The other family is an error.",
                    },
                ),
                "shift": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "tooltip": "Flow only: timestep shift; larger values spend more steps at high noise. "
                        "0 uses the checkpoint's scheduler config.",
                    },
                ),
            },
            "optional": {
                "latent": (
                    "LATENT",
                    {
                        "tooltip": "Video to video: latents of an input video (EasyAnimate VAE Encode) to start "
                        "from; the video size is taken from them. A noise mask on them (Set Latent Noise Mask; "
                        "one mask or one per frame, 1 = regenerate) keeps the video where the mask is 0 and "
                        "blends where it lies between, as KSampler does."
                    },
                ),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "With a latent: how much of the input video is redrawn (0.5-0.8 keeps its "
                        "layout and motion). 1 ignores the latent's content.",
                    },
                ),
                "teacache": (
                    "FLOAT",
                    {
                        "default": DEFAULT_THRESHOLD,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "TeaCache threshold: reuse the previous step's transformer result while the "
                        "input has barely changed (V5.1 models; V5 always runs every step, as in EasyAnimate's "
                        "scripts). 0.08 (default) is what EasyAnimate's own scripts run with: fewer transformer "
                        "calls, a slightly different video. 0 = off, the exact output; higher skips more (the "
                        "official nodes use 0.10).",
                    },
                ),
                "conditioning": (
                    COND,
                    {
                        "tooltip": "Conditioning from EasyAnimate Image to Video, Inpaint Video, Control Video or Camera "
                        "Control; it must be made "
                        "for the same width, height and frames."
                    },
                ),
            },
        }

    def sample(
        self,
        model,
        embeds,
        width: int,
        height: int,
        frames: int,
        steps: int,
        cfg: float,
        seed: int,
        scheduler: str,
        shift: float,
        latent=None,
        denoise: float = 1.0,
        conditioning=None,
        teacache: float = DEFAULT_THRESHOLD,
    ):
        # before make_room evicts anything (run_sampler checks too)
        check_scheduler_for(model.config.version, scheduler)
        (width, height, frames), init = _generation_size(
            latent, width, height, frames, denoise, model.config.out_channels
        )
        batch = 1 if latent is None else latent["samples"].shape[0]
        noise_indices = _batch_index(latent)
        shape = latent_shape_for(model.config, width, height, frames, batch)
        if conditioning is not None and (conditioning.width, conditioning.height, conditioning.frames) != (
            width,
            height,
            frames,
        ):
            raise ValueError(
                f"the conditioning was made for {conditioning.describe()} but the sampler generates "
                f"{width}x{height}, {frames} frames: set the same width, height and frames on both nodes"
            )
        if conditioning is not None and conditioning.variant != model.config.variant.value:
            raise ValueError(
                f"the conditioning was made for an EasyAnimate {conditioning.variant} checkpoint but this model is "
                f"{model.config.variant.value}: connect the same model to the conditioning node and to the sampler"
            )
        cond = sampler_conditioning(model.config, shape, conditioning and conditioning.conditioning, init)
        if latent is not None and latent.get("noise_mask") is not None:  # Set Latent Noise Mask, as KSampler does
            cond = noise_mask_conditioning(cond, latent["noise_mask"], latent["samples"], shape)
        progress = host.make_progress_callback(steps, model.latent_rgb)
        stats = {}
        device = host.make_room(sampling_vram_bytes, model.model, model.memory, shape, model.dtype)
        try:
            latents = run_sampler(
                model,
                embeds,
                shape,
                steps=steps,
                cfg=cfg,
                seed=seed,
                scheduler=scheduler,
                shift=shift or None,
                denoise=denoise if init is not None else 1.0,
                cond=cond,
                device=device,
                offload=host.offload_device(),
                progress=progress,
                should_stop=host.should_stop,
                teacache=teacache,
                stats=stats,
                noise_indices=noise_indices,
            )
        except Interrupted as stopped:
            host.throw_if_interrupted()  # raises the host's own cancel exception (and clears the request)
            raise host.INTERRUPT_EXCEPTION() from stopped
        report = f"{stats['transformer_calls']} transformer calls, {stats['teacache_skipped']} skipped by TeaCache"
        if "teacache_note" in stats:
            report += f" ({stats['teacache_note']})"
        log.info("EasyAnimate Sampler: %s", report)
        out = {"samples": latents}
        if noise_indices is not None:  # kept, as KSampler keeps it, for a later pass over the same videos
            out["batch_index"] = noise_indices
        return {"ui": {"text": [report]}, "result": (out,)}


NODE_CLASS_MAPPINGS = {"EasyAnimateVideoSampler": EasyAnimateVideoSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimateVideoSampler": "EasyAnimate Sampler"}
