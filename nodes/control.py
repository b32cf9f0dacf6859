"""EasyAnimate Control Video (Control checkpoints) and EasyAnimate Canny (edge frames for it)."""

from __future__ import annotations

from ..easyanimate_core.builders import control_video_conditioning
from ..easyanimate_core.preprocess import canny
from . import host
from .types import CATEGORY, COND, MODEL, VAE, VideoConditioning, first_frame, resample_input, size_inputs, vae_encoding


class EasyAnimateControlVideo:
    DESCRIPTION = (
        "Turns a control video (Canny edges, pose skeletons, depth maps, trajectory heat-maps: any IMAGE frames) "
        "and an optional reference image into conditioning for EasyAnimate Sampler. Needs a Control checkpoint "
        "(e.g. EasyAnimateV5.1-12b-zh-Control); the reference image (V5.1 only) sets the look of the first frame. "
        "Frames are scaled to cover the video size and centre-cropped."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Control conditioning for EasyAnimate Sampler (same width, height and frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate Control transformer the conditioning is for."}),
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE that encodes the control video and reference image."}),
                "control_video": (
                    "IMAGE",
                    {
                        "tooltip": "The control frames, one per generated frame (from EasyAnimate Canny, "
                        "EasyAnimate Trajectory, or a pose/depth node of another pack)."
                    },
                ),
                **size_inputs("video"),
                "resample": resample_input("control video"),
            },
            "optional": {
                "ref_image": (
                    "IMAGE",
                    {
                        "tooltip": "V5.1 Control checkpoints: an image the video starts from in look and content "
                        "(of a batch, the first image). V5 checkpoints take none."
                    },
                ),
            },
        }

    def encode(self, model, vae, control_video, width: int, height: int, frames: int, resample: bool, ref_image=None):
        cond = control_video_conditioning(
            vae,
            model.config,
            control_video,
            first_frame(ref_image, "ref_image"),
            width,
            height,
            frames,
            resample=resample,
            **vae_encoding(vae, width, height),
        )
        return (VideoConditioning(cond, width, height, frames, model.config.variant.value),)


class EasyAnimateCanny:
    DESCRIPTION = (
        "Canny edge detection (kornia) on every frame, for the control video of a Control checkpoint. Thresholds "
        "are on the gradient strength of the 0..1 grayscale image: lower values keep more, fainter edges."
    )
    CATEGORY = f"{CATEGORY}/preprocess"
    FUNCTION = "detect"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edges",)
    OUTPUT_TOOLTIPS = ("White edges on black, one 3-channel frame per input frame, at the input size.",)

    @classmethod
    def INPUT_TYPES(cls):
        def threshold(default: float, what: str) -> tuple:
            return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": what})

        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to detect edges in (a video as an IMAGE batch)."}),
                "low_threshold": threshold(
                    0.1,
                    "Gradients below this are never edges; between low and high only when connected to a "
                    "strong edge (kornia.filters.canny). Must be below high_threshold.",
                ),
                "high_threshold": threshold(0.2, "Gradients above this are always edges."),
            },
            "optional": {
                "blur_sigma": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.1,
                        "max": 10.0,
                        "step": 0.1,
                        "tooltip": "Gaussian blur before the gradients: larger ignores fine texture and noise.",
                    },
                ),
                "kernel_size": (
                    "INT",
                    {
                        "default": 5,
                        "min": 3,
                        "max": 31,
                        "step": 2,
                        "tooltip": "Size of the blur kernel (odd); about 4 x blur_sigma + 1 covers the Gaussian.",
                    },
                ),
            },
        }

    def detect(self, images, low_threshold: float, high_threshold: float, blur_sigma: float = 1.0, kernel_size=5):
        bar = host.progress_bar(images.shape[0])

        def progress(done: int, total: int) -> None:
            host.throw_if_interrupted()
            bar.update_absolute(done, total)

        edges = canny(
            images,
            low_threshold,
            high_threshold,
            kernel_size=kernel_size,
            sigma=blur_sigma,
            device=host.torch_device(),
            progress=progress,
        )
        return (edges,)


NODE_CLASS_MAPPINGS = {"EasyAnimateControlVideo": EasyAnimateControlVideo, "EasyAnimateCanny": EasyAnimateCanny}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EasyAnimateControlVideo": "EasyAnimate Control Video",
    "EasyAnimateCanny": "EasyAnimate Canny",
}
