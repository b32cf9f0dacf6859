"""Loader nodes: a whole EasyAnimate checkpoint folder, or a transformer, VAE or text encoder alone."""

from __future__ import annotations

import logging
import os

import torch

from ..easyanimate_core.checkpoint import load_checkpoint
from ..easyanimate_core.handles import TextEncoderHandle, TransformerHandle, VAEHandle, pick_dtype, vae_dtype_for
from ..easyanimate_core.loading import load_transformer, load_vae
from ..easyanimate_core.memory import MemoryPolicy
from ..easyanimate_core.preview import latent_rgb_for
from ..easyanimate_core.text_loading import load_text_encoder
from . import host
from .types import CATEGORY, MODEL, TEXT_ENCODER, VAE, memory_inputs, precision_input

log = logging.getLogger("EasyAnimate")


def text_encoder_fp8_input() -> tuple:
    return (
        "BOOLEAN",
        {
            "default": False,
            "tooltip": "Store the text encoder's linear weights in fp8 (computed in the chosen precision): Qwen2-VL "
            "7B needs about 8 GB instead of 15 GB while it encodes, at a small cost in prompt fidelity.",
        },
    )


def _policies(memory_mode: str, resident_blocks: int) -> tuple[MemoryPolicy, MemoryPolicy]:
    """(transformer policy, VAE/text encoder policy): the small models offload whenever the transformer does."""
    policy = MemoryPolicy(memory_mode, resident_blocks)
    return policy, MemoryPolicy("model_offload" if policy.offloads else "none")


def _dtype(precision: str):
    """The loaders' compute dtype: an explicit precision, or for auto ComfyUI's choice for its device."""
    device = host.torch_device()
    return pick_dtype(host.precision(precision, device), device)


def _vae_handle(vae, dtype, policy: MemoryPolicy) -> VAEHandle:
    latent_rgb = latent_rgb_for(vae, host.torch_device(), host.offload_device("vae"), policy)
    return VAEHandle(vae, dtype, policy, latent_rgb=latent_rgb)


def text_encoder_folders() -> list[str]:
    """Sub-folders of models/text_encoders that hold a text_encoder/ folder (EasyAnimate's layout)."""
    names = set()
    for root in host.folder_paths_for("text_encoders"):
        if os.path.isdir(root):
            names.update(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n, "text_encoder")))
    return sorted(names)


class LoadEasyAnimateModel:
    DESCRIPTION = (
        "Loads a whole EasyAnimate V5.1 or V5 checkpoint folder from models/EasyAnimate/<name>/ (as downloaded "
        "from huggingface.co/alibaba-pai, original or diffusers layout): transformer, VAE, text encoder(s) and "
        "scheduler config. The version (V5.1 or V5) and the variant (text-to-video, InP for image-to-video, Control, "
        "Control-Camera) are detected from the weights."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, VAE, TEXT_ENCODER)
    RETURN_NAMES = ("model", "vae", "text_encoder")
    OUTPUT_TOOLTIPS = (
        "The diffusion transformer with its precision, memory mode and scheduler config.",
        "The MagViT video VAE: latents to frames and back.",
        "The text encoder (Qwen2-VL for V5.1, Bert + T5 for V5) for EasyAnimate Text Encode.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (
                    host.list_checkpoint_folders(),
                    {
                        "tooltip": "A checkpoint folder in models/EasyAnimate/, e.g. EasyAnimateV5.1-12b-zh (text "
                        "to video) or EasyAnimateV5.1-12b-zh-InP (image to video)."
                    },
                ),
                "precision": precision_input(),
                **memory_inputs(),
            },
            "optional": {"text_encoder_fp8": text_encoder_fp8_input()},
        }

    def load(
        self, checkpoint: str, precision: str, memory_mode: str, resident_blocks: int, text_encoder_fp8: bool = False
    ):
        folder = host.model_path(host.CHECKPOINT_FOLDER, checkpoint, folder=True)
        dtype = _dtype(precision)
        policy, small = _policies(memory_mode, resident_blocks)
        models, _, _ = load_checkpoint(
            folder,
            dtype=dtype,
            weight_dtype=policy.weight_dtype,
            vae_dtype=vae_dtype_for(dtype),
            text_weight_dtype=torch.float8_e4m3fn if text_encoder_fp8 else None,
            progress=host.make_progress_callback(1),  # weight files, VAE, text encoder; raises on Cancel
        )
        vae = _vae_handle(models.vae, vae_dtype_for(dtype), small)
        model = TransformerHandle(
            models.transformer, dtype, policy, models.scheduler_config, name=checkpoint, latent_rgb=vae.latent_rgb
        )
        text_encoder = TextEncoderHandle(models.text_encoder, dtype, small)
        log.info("%s: %s, memory mode %s", checkpoint, dtype, memory_mode)
        return (model, vae, text_encoder)


class LoadEasyAnimateTransformer:
    DESCRIPTION = (
        "Loads an EasyAnimate transformer from a single file in models/diffusion_models/ (original or diffusers "
        "keys, fp8 files too); its config is read from the weight shapes. Without a checkpoint's scheduler "
        "folder the sampler uses the Flow scheduler's defaults (V5.1); use Load EasyAnimate Model for V5's "
        "schedulers. Latent previews need the VAE and are off for a transformer loaded alone."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion transformer with its precision and memory mode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "transformer": (
                    host.list_models("diffusion_models"),
                    {"tooltip": "An EasyAnimate transformer weights file in models/diffusion_models/."},
                ),
                "precision": precision_input(),
                **memory_inputs(),
            }
        }

    def load(self, transformer: str, precision: str, memory_mode: str, resident_blocks: int):
        path = host.model_path("diffusion_models", transformer)
        dtype = _dtype(precision)
        policy, _ = _policies(memory_mode, resident_blocks)
        model, _ = load_transformer(path, dtype=dtype, weight_dtype=policy.weight_dtype)
        return (TransformerHandle(model, dtype, policy, None, name=transformer),)


class LoadEasyAnimateVAE:
    DESCRIPTION = (
        "Loads the EasyAnimate MagViT VAE from a single file in models/vae/ (the V5/V5.1 VAE config is used; a "
        "config.json saved beside it as <file name>.json overrides it)."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The MagViT video VAE: latents to frames and back.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (host.list_models("vae"), {"tooltip": "The EasyAnimate VAE weights file in models/vae/."}),
                "precision": precision_input(),
                "offload": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Keep the VAE off the GPU except while it encodes or decodes."},
                ),
            }
        }

    def load(self, vae: str, precision: str, offload: bool):
        path = host.model_path("vae", vae)
        dtype = vae_dtype_for(_dtype(precision))
        model, _ = load_vae(path, dtype=dtype)  # reads <name>.json beside the file when there is one
        return (_vae_handle(model, dtype, MemoryPolicy("model_offload" if offload else "none")),)


class LoadEasyAnimateTextEncoder:
    DESCRIPTION = (
        "Loads EasyAnimate's text encoder from a folder in models/text_encoders/ holding text_encoder/ and "
        "tokenizer/ (Qwen2-VL for V5.1), plus text_encoder_2/ and tokenizer_2/ (T5) for V5."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder for EasyAnimate Text Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (
                    text_encoder_folders(),
                    {"tooltip": "A folder in models/text_encoders/ with text_encoder/ and tokenizer/ inside."},
                ),
                "precision": precision_input(),
                "offload": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Keep the text encoder off the GPU except while it encodes."},
                ),
            },
            "optional": {"fp8": text_encoder_fp8_input()},
        }

    def load(self, text_encoder: str, precision: str, offload: bool, fp8: bool = False):
        folder = host.model_path("text_encoders", text_encoder, folder=True)
        dtype = _dtype(precision)
        encoder = load_text_encoder(folder, dtype=dtype, weight_dtype=torch.float8_e4m3fn if fp8 else None)
        return (TextEncoderHandle(encoder, dtype, MemoryPolicy("model_offload" if offload else "none")),)


NODE_CLASS_MAPPINGS = {
    "EasyAnimateModelLoader": LoadEasyAnimateModel,
    "EasyAnimateTransformerLoader": LoadEasyAnimateTransformer,
    "EasyAnimateVAELoader": LoadEasyAnimateVAE,
    "EasyAnimateTextEncoderLoader": LoadEasyAnimateTextEncoder,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EasyAnimateModelLoader": "Load EasyAnimate Model",
    "EasyAnimateTransformerLoader": "Load EasyAnimate Transformer",
    "EasyAnimateVAELoader": "Load EasyAnimate VAE",
    "EasyAnimateTextEncoderLoader": "Load EasyAnimate Text Encoder",
}
