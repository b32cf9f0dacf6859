"""Small immutable handles that travel between nodes (and CLI steps).

A handle holds a loaded model plus how to run it (dtype, memory policy, attention backend, LoRA patches).
Changing any of these returns a new handle; nothing mutates a loaded model in place, so graphs that share
a loader stay correct and cached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .configs import TransformerConfig
from .memory import MemoryPolicy
from .text import TextEmbeds, TextEncoder
from .transformer import EasyAnimateTransformer
from .vae import MagvitVAE


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' picks bf16 on GPUs that support it, else fp16 on GPUs, and fp32 on the CPU."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if precision in table:
        return table[precision]
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def vae_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The official fp16 recipe runs the VAE in float32 (``upcast_vae``); other precisions run it as is."""
    return torch.float32 if dtype == torch.float16 else dtype


def held_tensors(*modules) -> list[torch.Tensor]:
    """The weights and buffers of ``modules``: what a handle keeps alive. A host that sizes cached outputs by
    their tensors asks for them (ComfyUI's RAM-pressure cache calls ``_comfy_cache_tensors``; it counts those
    in CPU memory), so loaded models count as what they hold instead of as nothing."""
    return [t for module in modules for t in (*module.parameters(), *module.buffers())]


@dataclass(frozen=True, eq=False)
class TransformerHandle:
    model: EasyAnimateTransformer
    dtype: torch.dtype
    memory: MemoryPolicy = MemoryPolicy()
    scheduler_config: dict | None = None
    attention: str = "sdpa"
    compile: str | None = None  # a torch.compile backend for the transformer blocks, or None
    compiled: dict = dataclasses.field(default_factory=dict, repr=False)  # block index -> compiled block
    fp8_matmul: bool = False  # multiply the fp8-stored block weights in fp8 (memory mode fp8; see ops.fp8_linear)
    loras: tuple = ()
    name: str = ""
    latent_rgb: object | None = None  # preview.LatentRGB of the checkpoint's VAE, for sampling previews

    @property
    def config(self) -> TransformerConfig:
        return self.model.config

    def replace(self, **changes) -> TransformerHandle:
        return dataclasses.replace(self, **changes)

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        return held_tensors(self.model)


@dataclass(frozen=True, eq=False)
class VAEHandle:
    vae: MagvitVAE
    dtype: torch.dtype
    memory: MemoryPolicy = MemoryPolicy()
    latent_rgb: object | None = None  # preview.LatentRGB fitted from this VAE (see preview.fit_latent_rgb)

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        return held_tensors(self.vae)


@dataclass(frozen=True, eq=False)
class TextEncoderHandle:
    encoder: TextEncoder
    dtype: torch.dtype
    memory: MemoryPolicy = MemoryPolicy()

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        return held_tensors(*self.encoder.modules())


@dataclass(frozen=True, eq=False)
class PromptEmbeds:
    """Positive and negative prompt embeddings, computed once and reusable across sampler runs."""

    positive: TextEmbeds
    negative: TextEmbeds
    kind: str  # the text encoder kind that made them ("qwen2vl" or "bert_t5")
