"""Placement policies: where weights live while a model works, and how blocks are streamed.

Modes (see README "Memory and speed"):
- ``none``: everything resident on the compute device.
- ``model_offload``: each model on the compute device only while it works, then back to the offload device.
- ``fp8``: transformer block weights stored as float8 e4m3fn (computed in bf16/fp16), with model offload.
- ``block_swap``: the first ``resident_blocks`` blocks stay on the compute device, the others are streamed in
  for their turn (the next block's copy is prefetched on a side CUDA stream) and dropped after it.

No policy mutates a model's parameters in place: streamed blocks run through ``torch.func.functional_call``
with device copies, so a model is unchanged after any error or interrupt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn
from torch.func import functional_call

log = logging.getLogger("EasyAnimate")

MEMORY_MODES = ("none", "model_offload", "fp8", "block_swap")
FP8 = torch.float8_e4m3fn
# torch.OutOfMemoryError (any device) from torch 2.5; torch.cuda.OutOfMemoryError, the same class there, before
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def is_out_of_memory(error: BaseException) -> bool:
    """torch's out-of-memory error, or an accelerator error that says so (ROCm/HIP and other devices raise
    ``torch.AcceleratorError`` "... out of memory"), as ComfyUI's ``model_management.is_oom`` tells them."""
    if isinstance(error, OutOfMemoryError):
        return True
    accelerator = getattr(torch, "AcceleratorError", None)  # torch >= 2.8
    return accelerator is not None and isinstance(error, accelerator) and "out of memory" in str(error).lower()


def raise_with_advice(error: BaseException, advice: str | Callable[[], str]) -> NoReturn:
    """Raise an error of ``error``'s own type and attributes (so hosts still tell it is out of memory: ComfyUI's
    execution.py then unloads its models and adds its tips; ROCm's keeps its error code) saying the advice and then
    the original message, caused by ``error``; ``.advice`` keeps the advice alone. A callable ``advice`` is called
    here; when it fails, or the new error cannot be made, ``error`` itself is raised: a fault in the advice never
    hides the out-of-memory error."""
    try:
        text = advice if isinstance(advice, str) else advice()
        advised = type(error)(f"{text}. [{str(error).strip()}]")
        advised.__dict__.update(error.__dict__)
        advised.advice = text
    except Exception:
        advised = None
    if advised is None:
        raise error
    raise advised from error


@contextmanager
def advise_on_out_of_memory(advice: Callable[[], str]) -> Iterator[None]:
    """Within the block, an out-of-memory error is raised again with ``advice()`` first (``raise_with_advice``);
    every other error passes unchanged."""
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        raise_with_advice(error, advice)


def readable_size(n: int) -> str:
    """Bytes as GiB with one decimal, or as whole MiB below 1 GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{round(n / 2**20)} MiB"


def is_fp8_weight(name: str, tensor: torch.Tensor) -> bool:
    """Whether memory mode fp8 stores this transformer weight in fp8: the 2-D weights of the blocks' linear layers.
    Norms, embeddings, biases, the patch embedding and the output head stay in the compute dtype."""
    return name.startswith("transformer_blocks.") and name.endswith(".weight") and tensor.ndim == 2


@dataclass(frozen=True)
class MemoryPolicy:
    mode: str = "none"
    resident_blocks: int = 0  # block_swap: how many leading blocks stay on the compute device
    prefetch: bool = True  # block_swap: copy the next block while the current one computes (CUDA)

    def __post_init__(self) -> None:
        if self.mode not in MEMORY_MODES:
            raise ValueError(f"unknown memory mode {self.mode!r}; choose one of {', '.join(MEMORY_MODES)}")
        if self.resident_blocks < 0:
            raise ValueError(f"resident_blocks must be >= 0, got {self.resident_blocks}")

    @property
    def offloads(self) -> bool:
        return self.mode in ("model_offload", "fp8", "block_swap")

    @property
    def weight_dtype(self) -> torch.dtype | None:
        return FP8 if self.mode == "fp8" else None


def _all_on(module: nn.Module, device: torch.device) -> bool:
    """Whether every tensor of ``module`` is on ``device`` (a move cut short by an error leaves some behind)."""
    return all(t.device == device for t in (*module.parameters(), *module.buffers()))


@contextmanager
def on_device(
    module: nn.Module,
    device: torch.device,
    offload: torch.device,
    policy: MemoryPolicy,
    keep: Callable[[str], bool] | None = None,
) -> Iterator[None]:
    """Put ``module`` (or its parameters for which ``keep(name)`` is true) on ``device`` for the block.

    With an offloading policy everything returns to ``offload`` afterwards, also on errors, including a child whose
    own move failed halfway (out of memory after some of its weights were copied).
    """
    moved = []
    try:
        for name, sub in module.named_children():
            if keep is None or keep(name):
                moved.append(sub)
                if not _all_on(sub, device):
                    sub.to(device)
        yield
    finally:
        if policy.offloads:
            for sub in moved:
                sub.to(offload)
            if device.type == "cuda":
                torch.cuda.empty_cache()


class BlockStreamer:
    """``run_blocks`` for block swap: blocks ``>= resident`` run from device copies made just in time."""

    def __init__(self, blocks: nn.ModuleList, resident: int, device: torch.device, prefetch: bool = True) -> None:
        self.blocks, self.resident, self.device = blocks, resident, device
        self.stream = torch.cuda.Stream(device) if prefetch and device.type == "cuda" else None
        self.pending: dict[int, tuple[dict[str, torch.Tensor], torch.cuda.Event | None]] = {}

    def _fetch(self, i: int) -> None:
        if i >= len(self.blocks) or i < self.resident or i in self.pending:
            return
        state = dict(self.blocks[i].named_parameters())
        if self.stream is None:
            self.pending[i] = ({k: v.to(self.device) for k, v in state.items()}, None)
            return
        with torch.cuda.stream(self.stream):
            copies = {k: v.to(self.device, non_blocking=True) for k, v in state.items()}
            event = torch.cuda.Event()
            event.record(self.stream)
        self.pending[i] = (copies, event)

    def _take(self, i: int) -> dict[str, torch.Tensor]:
        """Block ``i``'s device copies, ready for use on the current stream."""
        copies, event = self.pending.pop(i)
        if event is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(event)
            # made on the side stream, used on this one: without this the allocator could hand their memory to the
            # next prefetch while this block's kernels are still queued
            for t in copies.values():
                t.record_stream(main)
        return copies

    def __call__(self, i: int, block: nn.Module, x, txt, temb, rope):
        if i < self.resident:
            return block(x, txt, temb, rope)
        self._fetch(i)
        copies = self._take(i)
        self._fetch(i + 1)  # overlap the next copy with this block's compute
        out = functional_call(block, copies, (x, txt, temb, rope))
        del copies
        return out


def pin_blocks(blocks: Iterable[nn.Module]) -> None:
    """Page-lock the CPU weights of streamed blocks (values unchanged), once per model.

    Copies from pageable memory are staged through a driver buffer and block the host, so the side stream could not
    overlap them with compute; from pinned memory they are true asynchronous DMA.
    """
    for block in blocks:
        for p in block.parameters():
            if p.device.type == "cpu" and not p.is_pinned():
                p.data = p.data.pin_memory()


@contextmanager
def transformer_placement(model: nn.Module, device: torch.device, offload: torch.device, policy: MemoryPolicy):
    """Place the transformer for one sampling run; yields the ``run_blocks`` hook (None unless swapping)."""
    if policy.mode != "block_swap":
        with on_device(model, device, offload, policy):
            yield None
        return
    resident = min(policy.resident_blocks, len(model.transformer_blocks))
    blocks = model.transformer_blocks
    if policy.resident_blocks >= len(blocks):
        log.warning(
            "block swap with %d resident blocks keeps all %d of this model's blocks on %s: nothing is streamed and "
            "memory use is that of memory mode none; set resident blocks below %d to save memory",
            policy.resident_blocks, len(blocks), device, len(blocks),
        )  # fmt: skip
    with on_device(model, device, offload, policy, keep=lambda name: name != "transformer_blocks"):
        try:
            for block in blocks[:resident]:
                block.to(device)
            if policy.prefetch and device.type == "cuda":
                pin_blocks(blocks[resident:])
            yield BlockStreamer(blocks, resident, device, policy.prefetch)
        finally:
            for block in blocks[:resident]:
                block.to(offload)


# --- how much device memory a stage needs (for hosts that must make room first) -----------------------------

ACTIVATION_FACTOR = 16  # sampling activations per token, in hidden-state copies (12B at 576x1008x49: about 13)
TEXT_TOKENS = 256  # the prompt tokens the transformer attends to (the official max_sequence_length)
ENCODER_MARGIN = 2**30  # text encoders' activations: short prompts, well under 1 GiB
VAE_TEMPORARIES = 16  # VAE activations per call, in copies of one full-resolution feature map


def param_bytes(module: nn.Module, device: torch.device | None = None) -> int:
    """Bytes of ``module``'s parameters as stored (fp8 weights count one byte each); with ``device``, only of those
    not already there (what placing the module on ``device`` adds)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if device is None or p.device != device)


def sampling_vram_bytes(
    model: nn.Module,
    policy: MemoryPolicy,
    latent_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> int:
    """An estimate of the device memory one sampling run adds on ``device``: the weights the policy places at once
    (block swap: everything but the blocks, the resident blocks and two streamed copies) that are not there yet,
    plus activations for batched CFG."""
    weights = param_bytes(model, device)
    if policy.mode == "block_swap":
        streamed = model.transformer_blocks[min(policy.resident_blocks, len(model.transformer_blocks)) :]
        weights += -sum(param_bytes(b, device) for b in streamed) + 2 * max(map(param_bytes, streamed), default=0)
    return weights + activation_bytes(model, latent_shape, dtype)


def activation_bytes(model: nn.Module, latent_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """An estimate of sampling's activations for batched CFG (``ACTIVATION_FACTOR`` hidden-state copies)."""
    cfg = model.config
    b, _, t, h, w = latent_shape
    tokens = t * (h // cfg.patch_size) * (w // cfg.patch_size) + TEXT_TOKENS
    width = cfg.num_attention_heads * cfg.attention_head_dim
    return ACTIVATION_FACTOR * 2 * b * tokens * width * torch.finfo(dtype).bits // 8


@dataclass(frozen=True)
class SamplingNeeds:
    """Estimated device memory of one sampling run per memory mode, with nothing of it on the device yet."""

    activations: int
    weights: int  # every weight as none and model_offload place it at once
    fp8_weights: int  # the same with fp8 block weights
    outside_blocks: int  # block swap's always-resident part (everything but the blocks)
    blocks: tuple[int, ...]  # each block's weights

    def mode(self, mode: str, resident_blocks: int = 0) -> int:
        if mode == "fp8":
            return self.fp8_weights + self.activations
        if mode != "block_swap":
            return self.weights + self.activations
        streamed = self.blocks[resident_blocks:]
        return (
            self.outside_blocks + sum(self.blocks[:resident_blocks]) + 2 * max(streamed, default=0) + self.activations
        )

    def resident_blocks_within(self, budget: int) -> int | None:
        """The most resident blocks (fewer than all: that is mode none) whose block swap fits in ``budget`` bytes;
        None when even none do."""
        fitting = [r for r in range(len(self.blocks)) if self.mode("block_swap", r) <= budget]
        return max(fitting) if fitting else None


def sampling_needs(
    model: nn.Module, policy: MemoryPolicy, latent_shape: tuple[int, ...], dtype: torch.dtype
) -> SamplingNeeds:
    """What one sampling run of ``latent_shape`` would need in each memory mode, from the model as loaded under
    ``policy``: weights that mode fp8 converted count at the compute dtype's size in the other modes (which
    load them so), block weights count one byte each in mode fp8."""
    compute = torch.finfo(dtype).bits // 8

    def stored(name: str, p: torch.Tensor, fp8: bool) -> int:
        if fp8 and is_fp8_weight(name, p):
            return p.numel()
        if p.dtype == FP8 and policy.mode == "fp8":
            return p.numel() * compute
        return p.numel() * p.element_size()

    params = list(model.named_parameters())
    blocks = tuple(
        sum(stored(name, p, False) for name, p in block.named_parameters(prefix=f"transformer_blocks.{i}"))
        for i, block in enumerate(model.transformer_blocks)
    )
    weights = sum(stored(name, p, False) for name, p in params)
    return SamplingNeeds(
        activations=activation_bytes(model, latent_shape, dtype),
        weights=weights,
        fp8_weights=sum(stored(name, p, True) for name, p in params),
        outside_blocks=weights - sum(blocks),
        blocks=blocks,
    )


def vae_vram_bytes(
    vae: nn.Module,
    height: int,
    width: int,
    dtype: torch.dtype,
    tile: int | None = None,
    device: torch.device | None = None,
) -> int:
    """An estimate of the device memory a VAE pass over ``height`` x ``width`` frames adds on ``device`` (per tile
    when tiled): its weights not there yet plus feature maps of one call (4 pixel frames at the first block's
    width)."""
    h, w = (min(height, tile), min(width, tile)) if tile else (height, width)
    channels = vae.config.block_out_channels[0]
    return param_bytes(vae, device) + VAE_TEMPORARIES * 4 * h * w * channels * torch.finfo(dtype).bits // 8


def encoder_vram_bytes(modules: Iterable[nn.Module], device: torch.device | None = None) -> int:
    """The text encoder's weights not on ``device`` yet, plus a margin for its activations."""
    return sum(param_bytes(m, device) for m in modules) + ENCODER_MARGIN
