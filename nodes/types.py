"""The pack's own ComfyUI types, and input specs shared by several nodes.

Each custom type travels as an immutable handle from ``easyanimate_core.handles`` (or the small
dataclass below); standard data travels as ComfyUI's IMAGE and LATENT.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..easyanimate_core.frames import rgb_frames
from ..easyanimate_core.memory import MEMORY_MODES, vae_vram_bytes
from ..easyanimate_core.sampling import Conditioning
from . import host

MODEL = "EASYANIMATE_MODEL"  # handles.TransformerHandle
VAE = "EASYANIMATE_VAE"  # handles.VAEHandle
TEXT_ENCODER = "EASYANIMATE_TEXT_ENCODER"  # handles.TextEncoderHandle
EMBEDS = "EASYANIMATE_EMBEDS"  # handles.PromptEmbeds
COND = "EASYANIMATE_COND"  # VideoConditioning
CAMERA = "EASYANIMATE_CAMERA"  # CameraPath

CATEGORY = "EasyAnimate"
PRECISIONS = ["auto", "bf16", "fp16", "fp32"]
MAX_SIZE = 4096
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class VideoConditioning:
    """Latent conditioning made for one video size and model variant; the sampler checks that both match."""

    conditioning: Conditioning
    width: int
    height: int
    frames: int
    variant: str  # the checkpoint variant it was made for (configs.Variant value: "InP", "Control", ...)

    def describe(self) -> str:
        return f"{self.width}x{self.height}, {self.frames} frames"


@dataclass(frozen=True)
class CameraPath:
    """A camera path: one easyanimate_core.camera.CameraPose per frame (never modified once made)."""

    poses: tuple

    @property
    def frames(self) -> int:
        return len(self.poses)


def resample_input(what: str) -> tuple:
    return (
        "BOOLEAN",
        {
            "default": False,
            "tooltip": f"When the {what} has another frame count than frames: off stops with an error saying both "
            f"counts; on spreads the {what} evenly over the frames.",
        },
    )


def first_frame(image, what: str = "image"):
    """IMAGE [B, H, W, C] 0..1 (C = 1 gray, 3 RGB or 4 RGBA) -> its first frame [3, H, W] RGB, or None.
    ``what`` names the input in the errors (an empty batch, other channel counts)."""
    return None if image is None else rgb_frames(image, what)[0].movedim(-1, 0)


def precision_input() -> tuple:
    return (
        PRECISIONS,
        {
            "default": "auto",
            "tooltip": "Compute precision. auto: ComfyUI's choice for the GPU: bf16 where it is supported, else fp16 "
            "(fp32 on the CPU or with --force-fp32). "
            "fp16 runs the VAE in fp32, as the official fp16 recipe does.",
        },
    )


def memory_inputs() -> dict:
    return {
        "memory_mode": (
            list(MEMORY_MODES),
            {
                "default": "model_offload",
                "tooltip": "Where the weights live while sampling. none: all on the GPU (fastest). "
                "model_offload: each model on the GPU only while it works. fp8: model_offload with the "
                "transformer blocks stored in float8 (about half the VRAM). block_swap: only resident_blocks "
                "blocks stay on the GPU and the others stream in (least VRAM; slower only where copying a block "
                "takes longer than computing it: slow PCIe links, small frames). Official guide for "
                "672x384x49: V5.1-12b needs 40 GB with model_offload, 24 GB with fp8, 16 GB with block_swap; "
                "V5.1-7b needs 24 GB with model_offload, 16 GB with fp8.",
            },
        ),
        "resident_blocks": (
            "INT",
            {
                "default": 20,
                "min": 0,
                "max": 200,
                "tooltip": "block_swap only: how many leading transformer blocks stay on the GPU; fewer use less "
                "VRAM and can run slower on slow PCIe links or small frames (the block count is in the log when "
                "the model loads).",
            },
        ),
    }


def size_inputs(what: str) -> dict:
    """width, height and frames of the video ``what`` is made for."""
    return {
        "width": (
            "INT",
            {
                "default": 672,
                "min": 16,
                "max": MAX_SIZE,
                "step": 16,
                "tooltip": f"Width of the {what} in pixels; a multiple of 16.",
            },
        ),
        "height": (
            "INT",
            {
                "default": 384,
                "min": 16,
                "max": MAX_SIZE,
                "step": 16,
                "tooltip": f"Height of the {what} in pixels; a multiple of 16.",
            },
        ),
        "frames": (
            "INT",
            {
                "default": 49,
                "min": 1,
                "max": 1025,
                "step": 4,
                "tooltip": f"Number of frames of the {what}: 4k+1 (1, 5, ..., 49). EasyAnimate V5/V5.1 were "
                "trained with up to 49 frames (6 s at 8 fps).",
            },
        ),
    }


def vae_encoding(vae, width: int, height: int) -> dict:
    """Where a conditioning node's VAE encodes run: the GPU with room made for them (other models unloaded as
    needed), the offload device, and the node's progress bar (which raises on Cancel)."""
    return {
        "device": host.make_room(vae_vram_bytes, vae.vae, height, width, vae.dtype),
        "offload": host.offload_device("vae"),
        "progress": host.make_progress_callback(1),
    }
