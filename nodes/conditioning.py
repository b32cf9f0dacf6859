"""EasyAnimate Image to Video (start/end frames, InP checkpoints) and Inpaint Video (video-to-video with a mask)."""

from __future__ import annotations

from ..easyanimate_core.builders import (
    continuation_conditioning,
    image_to_video_conditioning,
    inpaint_video_conditioning,
)
from ..easyanimate_core.conditioning import BASE_RESOLUTIONS, bucket_size
from ..easyanimate_core.frames import join_clips, rgb_frames
from .types import (
    CATEGORY,
    COND,
    MAX_SEED,
    MODEL,
    VAE,
    VideoConditioning,
    first_frame,
    resample_input,
    size_inputs,
    vae_encoding,
)


def augmentation_inputs() -> dict:
    """noise_aug_strength and seed of the InP noise augmentation of kept frames."""
    return {
        "noise_aug_strength": (
            "FLOAT",
            {
                "default": 0.0563,
                "min": 0.0,
                "max": 1.0,
                "step": 0.0001,
                "tooltip": "Noise added to the kept frames before encoding, as the InP models were "
                "trained (0.0563 is the official default); (InP only) more lets the video drift from what is kept.",
            },
        ),
        "seed": (
            "INT",
            {
                "default": 43,
                "min": 0,
                "max": MAX_SEED,
                "control_after_generate": True,
                "tooltip": "Seed of the augmentation noise. With the sampler's seed, the run equals diffusers' "
                "EasyAnimate pipeline's (the original scripts draw their noise on the GPU, so their videos differ).",
            },
        ),
    }


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
                **augmentation_inputs(),
            },
            "optional": {
                "start_image": (
                    "IMAGE",
                    {
                        "tooltip": "The first frame of the video. A batch of K images becomes the first K frames, "
                        "kept (as the official nodes do; e.g. the last frames of another clip)."
                    },
                ),
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
            _start_frames(start_image),
            first_frame(end_image, "end_image"),
            width,
            height,
            frames,
            noise_aug_strength=noise_aug_strength,
            seed=seed,
            **vae_encoding(vae, width, height),
        )
        return (VideoConditioning(cond, width, height, frames, model.config.variant.value),)


def _start_frames(images):
    """IMAGE [K, H, W, C] -> the start image [3, H, W] (K = 1) or K start frames [3, K, H, W], or None."""
    if images is None:
        return None
    frames = rgb_frames(images, "start_image").movedim(-1, 0)  # [3, K, H, W]
    return frames[:, 0] if frames.shape[1] == 1 else frames


OVERLAP_TOOLTIP = (
    "How many of the previous clip's last frames the new clip begins with (kept as they are, as the official "
    "long-video loop does; 4 is its default). More frames carry the motion on more smoothly; each leaves one "
    "frame less to generate. Set the same value on EasyAnimate Join Clips."
)


class EasyAnimateExtendVideo:
    DESCRIPTION = (
        "Continues a video: conditioning for a new clip that begins with the last frames of the given one, so "
        "the motion carries on (EasyAnimate's long-video loop; InP checkpoints). Sample it, decode it, and join "
        "the two clips with EasyAnimate Join Clips; chain more of these for longer videos. The frames are scaled "
        "to cover the video size and centre-cropped."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Continuation conditioning for EasyAnimate Sampler (same width, height and frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate InP transformer the conditioning is for."}),
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE that encodes the frames."}),
                "video": ("IMAGE", {"tooltip": "The clip to continue (e.g. from EasyAnimate VAE Decode)."}),
                "overlap": ("INT", {"default": 4, "min": 1, "max": 48, "tooltip": OVERLAP_TOOLTIP}),
                **size_inputs("new clip"),
                **augmentation_inputs(),
            },
            "optional": {
                "end_image": ("IMAGE", {"tooltip": "The last frame of the new clip (of a batch, the first image)."}),
            },
        }

    def encode(self, model, vae, video, overlap, width, height, frames, noise_aug_strength, seed, end_image=None):
        cond = continuation_conditioning(
            vae,
            model.config,
            video,
            overlap,
            first_frame(end_image, "end_image"),
            width,
            height,
            frames,
            noise_aug_strength=noise_aug_strength,
            seed=seed,
            **vae_encoding(vae, width, height),
        )
        return (VideoConditioning(cond, width, height, frames, model.config.variant.value),)


class EasyAnimateJoinClips:
    DESCRIPTION = (
        "Joins a clip and its continuation (from EasyAnimate Extend Video) into one video: the frames they share "
        "are cross-faded from the first clip into the second, as EasyAnimate's long-video loop does. The first "
        "clip is scaled to cover the second's size and centre-cropped when they differ."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "join"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The joined video: first + second - overlap frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "first": ("IMAGE", {"tooltip": "The earlier clip (the one Extend Video continued)."}),
                "second": ("IMAGE", {"tooltip": "Its continuation, decoded."}),
                "overlap": (
                    "INT",
                    {
                        "default": 4,
                        "min": 0,
                        "max": 48,
                        "tooltip": "The overlap set on EasyAnimate Extend Video: how many frames the clips "
                        "share (0 = simply one after the other).",
                    },
                ),
            }
        }

    def join(self, first, second, overlap: int):
        return (join_clips(first, second, overlap),)


class EasyAnimateInpaintVideo:
    DESCRIPTION = (
        "Video to video, optionally only inside a mask: regenerates the masked region (white = 1 = regenerate) "
        "and keeps the rest. InP checkpoints see the masked video; T2V checkpoints blend the input's latents back "
        "outside the mask after every step. Connect conditioning and latent to EasyAnimate Sampler; with a mask "
        "denoise 1 redraws the region freely, below 1 it starts from the input video. The frames are scaled to "
        "cover the video size and centre-cropped."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (COND, "LATENT")
    RETURN_NAMES = ("conditioning", "latent")
    OUTPUT_TOOLTIPS = (
        "Inpaint conditioning for EasyAnimate Sampler (same width, height and frames).",
        "The input video's latents: connect to the Sampler's latent input to start from the video (denoise < 1).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate transformer: an InP or a T2V checkpoint."}),
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE that encodes the video."}),
                "video": (
                    "IMAGE",
                    {"tooltip": "The input video's frames (e.g. from Load Video > Get Video Components)."},
                ),
                **size_inputs("video"),
                "resample": resample_input("input video (and a per-frame mask)"),
                **augmentation_inputs(),
            },
            "optional": {
                "mask": (
                    "MASK",
                    {
                        "tooltip": "Where to regenerate (1) and keep (0): one mask for every frame, or one per "
                        "frame. Without a mask the whole video is redrawn by the Sampler's denoise."
                    },
                ),
            },
        }

    def encode(self, model, vae, video, width, height, frames, resample, noise_aug_strength, seed, mask=None):
        cond, latents = inpaint_video_conditioning(
            vae,
            model.config,
            video,
            mask,
            width,
            height,
            frames,
            resample=resample,
            noise_aug_strength=noise_aug_strength,
            seed=seed,
            **vae_encoding(vae, width, height),
        )
        return (VideoConditioning(cond, width, height, frames, model.config.variant.value), {"samples": latents})


class EasyAnimateBucketSize:
    DESCRIPTION = (
        "Picks the generation size from an image the way the official nodes do: the trained aspect-ratio bucket "
        "nearest to the image's shape, at a base resolution of 512, 768, 960 or 1024. Connect width and height to "
        "Image to Video and to the Sampler."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "size"
    RETURN_TYPES = ("INT", "INT")
    RETURN_NAMES = ("width", "height")
    OUTPUT_TOOLTIPS = ("Bucket width (a multiple of 16).", "Bucket height (a multiple of 16).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image whose aspect ratio picks the bucket (its first frame)."}),
                "base_resolution": (
                    list(BASE_RESOLUTIONS),
                    {
                        "default": 512,
                        "tooltip": "512: about 672x384 for landscape images (the official default); 768: about "
                        "1008x576; 960: about 1248x720; 1024: about 1344x768 (these two need much more memory and time).",
                    },
                ),
            }
        }

    def size(self, image, base_resolution: int):
        height, width = image.shape[1:3]
        return bucket_size(int(width), int(height), int(base_resolution))


NODE_CLASS_MAPPINGS = {
    "EasyAnimateImageToVideo": EasyAnimateImageToVideo,
    "EasyAnimateInpaintVideo": EasyAnimateInpaintVideo,
    "EasyAnimateBucketSize": EasyAnimateBucketSize,
    "EasyAnimateExtendVideo": EasyAnimateExtendVideo,
    "EasyAnimateJoinClips": EasyAnimateJoinClips,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EasyAnimateImageToVideo": "EasyAnimate Image to Video",
    "EasyAnimateInpaintVideo": "EasyAnimate Inpaint Video",
    "EasyAnimateBucketSize": "EasyAnimate Bucket Size",
    "EasyAnimateExtendVideo": "EasyAnimate Extend Video",
    "EasyAnimateJoinClips": "EasyAnimate Join Clips",
}
