"""EasyAnimate Image to Video: start and/or end frames -> conditioning for an InP checkpoint."""

from __future__ import annotations

from ..easyanimate_core.runner import image_to_video_conditioning
from . import host
from .types import CATEGORY, COND, MAX_SEED, MODEL, VAE, VideoConditioning, size_inputs


def _first_frame(image):
    """IMAGE [B, H, W, C] 0..1 -> its first frame [3, H, W], or None."""
    return None if image is None else image[0, ..., :3].movedim(-1, 0)


class EasyAnimateImageToVideo:
    DESCRIPTION = (
        "Turns a start image, an end image, or both into conditioning for EasyAnimate Sampler: the video begins "
        "and/or ends on them. Needs an InP checkpoint (e.g. EasyAnimateV5.1-12b-zh-InP). The images are scaled "
        "to cover the video size and centre-cropped."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Start/end frame conditioning for EasyAnimate Sampler (same width, height and frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate InP transformer the conditioning is for."}),
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE that encodes the images."}),
                **size_inputs("video"),
                "noise_aug_strength": (
                    "FLOAT",
                    {
                        "default": 0.0563,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.0001,
                        "tooltip": "Noise added to the kept frames before encoding, as the InP models were "
                        "trained (0.0563 is the official default); more lets the video drift from the images.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 43,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Seed of the augmentation noise. With the sampler's seed, the run equals the "
                        "official pipeline's.",
                    },
                ),
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "The first frame of the video (of a batch, the first image)."}),
                "end_image": ("IMAGE", {"tooltip": "The last frame of the video (of a batch, the first image)."}),
            },
        }

    def encode(
        self,
        model,
        vae,
        width: int,
        height: int,
        frames: int,
        noise_aug_strength: float,
        seed: int,
        start_image=None,
        end_image=None,
    ):
        if start_image is None and end_image is None:
            raise ValueError("EasyAnimate Image to Video needs a start image, an end image, or both")
        cond = image_to_video_conditioning(
            vae,
            model.config,
            _first_frame(start_image),
            _first_frame(end_image),
            width,
            height,
            frames,
            noise_aug_strength=noise_aug_strength,
            seed=seed,
            device=host.torch_device(),
            offload=host.offload_device(),
        )
        return (VideoConditioning(cond, width, height, frames),)


NODE_CLASS_MAPPINGS = {"EasyAnimateImageToVideo": EasyAnimateImageToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimateImageToVideo": "EasyAnimate Image to Video"}
