"""Running handles: text encoding, sampling and VAE passes with placement, progress and interrupts.

These are what the ComfyUI nodes and the CLI call; each takes the compute and offload devices and the
host's ``progress`` / ``should_stop`` callbacks as arguments.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from contextlib import ExitStack

import torch

from . import conditioning as C
from . import lora, ops
from .attention import check_backend
from .builders import VAE_SPATIAL, VAE_TEMPORAL
from .handles import PromptEmbeds, TextEncoderHandle, TransformerHandle, VAEHandle
from .memory import (
    FP8,
    MemoryPolicy,
    advise_on_out_of_memory,
    on_device,
    param_bytes,
    readable_size,
    sampling_needs,
    transformer_placement,
)
from .sampling import Conditioning, initial_noise, sample
from .schedulers import build_scheduler
from .vae import VAETiling


def encode_prompts(
    te: TextEncoderHandle, prompt: str, negative: str | None, device: torch.device, offload: torch.device
) -> PromptEmbeds:
    """Embed a prompt and its negative; the text encoder leaves the GPU afterwards under offloading policies.

    ``negative=None`` (a run without CFG, which never reads it) skips its encoder pass; the prompt's own
    embeddings stand in for it."""
    with advise_on_out_of_memory(lambda: encoder_out_of_memory_advice(te, device)), ExitStack() as stack:
        for module in te.encoder.modules():
            stack.enter_context(on_device(module, device, offload, te.memory))
        pos = te.encoder.encode([prompt], device=device)
        neg = pos if negative is None else te.encoder.encode([negative], device=device)
    cpu = torch.device("cpu")
    return PromptEmbeds(pos.to(cpu), neg.to(cpu), te.encoder.kind)


def check_embeds(handle: TransformerHandle, embeds: PromptEmbeds) -> None:
    cfg = handle.config
    want = "bert_t5" if cfg.version == "V5" else "qwen2vl"
    if embeds.kind != want:
        raise ValueError(
            f"the prompt was encoded with a {embeds.kind} text encoder but the model is EasyAnimate {cfg.version}, "
            f"which needs {want}: use the text encoder of the same checkpoint"
        )
    if embeds.positive.embeds.shape[-1] != cfg.text_embed_dim:
        raise ValueError(
            f"text embeddings are {embeds.positive.embeds.shape[-1]} wide but the model expects {cfg.text_embed_dim}: "
            "use the text encoder of the same checkpoint"
        )


def run_sampler(
    handle: TransformerHandle,
    embeds: PromptEmbeds,
    latent_shape: tuple[int, ...],
    *,
    steps: int,
    cfg: float,
    seed: int,
    scheduler: str,
    shift: float | None = None,
    guidance_rescale: float = 0.0,
    denoise: float = 1.0,
    cond: Conditioning | None = None,
    device: torch.device,
    offload: torch.device,
    progress: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    teacache: float = 0.0,
    stats: dict | None = None,
    noise_indices: list[int] | None = None,
) -> torch.Tensor:
    """Sample scaled latents of ``latent_shape`` [B, C, t, h, w] (float32, on the CPU).

    ``teacache > 0`` enables TeaCache with that threshold; ``stats`` receives the skipped-call count;
    ``noise_indices`` (a LATENT's ``batch_index``) picks each item's noise from a batch drawn whole.
    """
    check_embeds(handle, embeds)
    if handle.fp8_matmul:
        check_fp8_matmul_device(device)
    if handle.compile == "inductor":
        check_inductor_device(device)
    noise, generator = initial_noise(latent_shape, seed, noise_indices)
    sched = build_scheduler(scheduler, handle.scheduler_config, shift, version=handle.config.version)
    model = handle.model
    model.set_attention_backend(handle.attention)
    lora_store = offload if handle.memory.offloads else device  # where converted LoRA tensors wait between runs
    with (
        advise_on_out_of_memory(lambda: out_of_memory_advice(handle, latent_shape, device)),
        transformer_placement(model, device, offload, handle.memory) as run_blocks,
        lora.applied(model, handle.loras, device, handle.dtype, store=lora_store, streamed=streamed_layer(handle)),
        ops.fp8_matmul_enabled(model, handle.fp8_matmul, device),
    ):
        latents = sample(
            model,
            sched,
            embeds.positive,
            embeds.negative,
            noise,
            steps=steps,
            cfg=cfg,
            guidance_rescale=guidance_rescale,
            denoise=denoise,
            cond=cond,
            generator=generator,
            device=device,
            dtype=handle.dtype,
            progress=progress,
            should_stop=should_stop,
            run_blocks=compiled_blocks(handle, run_blocks),
            teacache=teacache,
            stats=stats,
        )
    return latents.cpu()


def device_memory(device: torch.device) -> int | None:
    """Total memory of a CUDA (or ROCm) or Intel GPU in bytes; None elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    xpu = getattr(torch, "xpu", None)
    if device.type == "xpu" and xpu is not None and xpu.is_available():
        return xpu.get_device_properties(device).total_memory
    return None


FIT_SHARE = 0.9  # of a GPU's memory that a mode's estimate may take to be suggested (CUDA's own context, others)


MODE_SETTING = " (the loader's memory_mode, the command line's --memory-mode)"


def out_of_memory_advice(handle: TransformerHandle, latent_shape: tuple[int, ...], device: torch.device) -> str:
    """What to change after sampling ran out of device memory: the estimated need of the failed memory mode at this
    size (``memory.sampling_needs``) and the modes that need less, those that fit where the device's size is
    known."""
    b, _, t, h, w = latent_shape
    size = f"{w * VAE_SPATIAL}x{h * VAE_SPATIAL}, {(t - 1) * VAE_TEMPORAL + 1} frames"
    size += f", {b} videos" if b > 1 else ""
    policy = handle.memory
    needs = sampling_needs(handle.model, policy, latent_shape, handle.dtype)
    blocks, resident = len(needs.blocks), min(policy.resident_blocks, len(needs.blocks))
    current = policy.mode + (f" with {resident} of {blocks} blocks resident" if policy.mode == "block_swap" else "")
    failed = needs.mode(policy.mode, resident)
    text = (
        f"out of memory on {device} while sampling {size} in memory mode {current}, which needs about "
        f"{readable_size(failed)} at this size (estimated; {readable_size(needs.activations)} of it activations)"
    )
    smaller = "generate fewer frames, a smaller size or fewer videos at once"
    total = device_memory(device)
    room = None if total is None else int(total * FIT_SHARE)  # what a mode may take to count as fitting
    budget = failed - 1 if room is None else min(failed - 1, room)  # and less than what failed
    less = []
    if policy.mode != "fp8" and needs.mode("fp8") <= budget:
        less.append(f"fp8 (about {readable_size(needs.mode('fp8'))})")
    swap = needs.resident_blocks_within(budget)
    if swap is not None:
        swap_need = readable_size(needs.mode("block_swap", swap))
        less.append(f"block_swap with at most {swap} of {blocks} blocks resident (about {swap_need})")
    if policy.mode == "none" and (room is None or failed <= room):
        less.append("model_offload (the same for sampling, but the text encoder leaves the GPU before it)")
    gpu = "" if total is None else f"this {readable_size(total)} GPU"
    if less:
        fit = f" and fit {gpu}" if gpu else ""
        text += f". These need less{fit}: {', '.join(less)}; choose one as the memory mode{MODE_SETTING}, or {smaller}"
    elif room is not None and failed <= room:
        text += f". That fits {gpu} by the estimate, so something else holds its memory: free it, or {smaller}"
    else:
        text += f". No memory mode needs less{' and fits ' + gpu if gpu else ''}: {smaller}"
    text += ". Other models on the GPU take memory too"
    if policy.mode == "none":
        text += " (in memory mode none the text encoder stays there)"
    return text


def encoder_out_of_memory_advice(te: TextEncoderHandle, device: torch.device) -> str:
    """What to change after text encoding ran out of device memory."""
    modules = te.encoder.modules()
    weights = readable_size(sum(map(param_bytes, modules)))
    text = f"out of memory on {device} while encoding the prompt, with {weights} of text encoder weights"
    if not any(p.dtype == FP8 for module in modules for p in module.parameters()):
        text += (
            f"; fp8 stores its linear layers' weights in one byte each instead of {torch.finfo(te.dtype).bits // 8} "
            "(the loader's text_encoder_fp8, Load EasyAnimate Text Encoder's fp8, the command line's --text-encoder-fp8)"
        )
    text += ". Other models on the GPU take memory too"
    if te.memory.mode == "none":
        text += (
            " (in memory mode none the transformer and the VAE stay there after their first run; model_offload moves"
            " each model off the GPU after its stage)"
        )
    return text


COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_device(name: str | torch.device, what: str = "device") -> torch.device:
    """``name`` as a torch.device this torch can compute on, else a ValueError saying what to use instead."""
    cpu = f"{what} cpu" if what.startswith("--") else f"{what}='cpu'"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what} {name!r} is not a device: use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{what} {name}: this torch ({torch.__version__}) sees no CUDA GPU; use {cpu}")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{what} {name}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{what} {name}: this torch sees no Apple GPU; use {cpu}")
    return device


def check_dtype(dtype: torch.dtype) -> None:
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"the compute dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")


COMPILE_BACKENDS = ("inductor", "cudagraphs", "aot_eager")  # torch.compile backends offered for the blocks


COMPILE_WITH_BLOCK_SWAP = "torch.compile cannot be combined with block swap; choose another memory mode or compile off"


def check_speed_options(
    memory: MemoryPolicy, attention: str, compile: str | None, teacache: float = 0.0, fp8_matmul: bool = False
) -> None:
    """The errors a bad combination of speed options would give mid-run, raised before any work."""
    check_backend(attention)
    if compile is not None and memory.mode == "block_swap":
        raise ValueError(COMPILE_WITH_BLOCK_SWAP)
    if compile is not None and compile not in COMPILE_BACKENDS:
        raise ValueError(f"unknown torch.compile backend {compile!r}; choose one of {', '.join(COMPILE_BACKENDS)}")
    if not 0 <= teacache < float("inf"):  # also NaN
        raise ValueError(f"the TeaCache threshold must be 0 (off) or positive, got {teacache}")
    if fp8_matmul and memory.mode != "fp8":
        raise ValueError(
            f"fp8_matmul multiplies fp8-stored weights, but the memory mode is {memory.mode!r}: "
            "load the transformer with memory mode fp8, or turn fp8_matmul off"
        )


def check_inductor_device(device: torch.device) -> None:
    """torch.compile's inductor generates Triton kernels for CUDA/ROCm and XPU GPUs; without Triton it fails at
    the first step with an error about the compiler, so say so before any work (Windows installs of torch lack
    it). The CPU (C++) and Apple GPUs (Metal) compile without Triton."""
    if torch.device(device).type in ("cuda", "xpu") and importlib.util.find_spec("triton") is None:
        raise ValueError(
            "torch.compile (inductor) needs Triton to compile for the GPU, and it is not installed: "
            "pip install triton (on Windows: pip install triton-windows), or set compile to off "
            "(aot_eager also runs without Triton, without the speed-up)"
        )


FP8_MATMUL_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (RTX 40xx, L4, L40) and Hopper (H100/H200) onwards


def check_fp8_matmul_device(device: torch.device) -> None:
    """fp8 GEMMs run on CUDA GPUs with fp8 tensor cores, and (slowly, for tests) on the CPU."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ValueError(f"fp8_matmul runs on NVIDIA GPUs, not on {device.type}: turn fp8_matmul off")
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < FP8_MATMUL_CAPABILITY:
        raise ValueError(
            f"fp8_matmul needs fp8 tensor cores (compute capability 8.9 or newer: RTX 40xx, L4, L40, H100, H200); "
            f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}: turn fp8_matmul off "
            "(memory mode fp8 alone still halves the weights' memory)"
        )


def streamed_layer(handle: TransformerHandle) -> Callable[[str], bool] | None:
    """With block swap, whether a layer name belongs to a block streamed in for its turn (else None)."""
    if handle.memory.mode != "block_swap":
        return None
    resident = handle.memory.resident_blocks

    def streamed(name: str) -> bool:
        parts = name.split(".")
        return parts[0] == "transformer_blocks" and int(parts[1]) >= resident

    return streamed


def compiled_blocks(handle: TransformerHandle, run_blocks):
    """The block runner with ``torch.compile`` applied per block when the handle asks for it.

    Compiled blocks are kept on the handle (one per block index), so later runs reuse them.
    """
    if handle.compile is None:
        return run_blocks
    if run_blocks is not None:
        raise ValueError(COMPILE_WITH_BLOCK_SWAP)
    cache = handle.compiled

    def run(i, block, x, txt, temb, rope):
        fn = cache.get(i)
        if fn is None:
            fn = cache[i] = torch.compile(block, backend=handle.compile, dynamic=False)
        return fn(x, txt, temb, rope)

    return run


def vae_decode(
    vh: VAEHandle,
    latents: torch.Tensor,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Scaled latents [B, C, t, h, w] -> IMAGE frames [B*T, H, W, 3] float32 0..1 on the CPU."""
    with on_device(vh.vae, device, offload, vh.memory):
        z = latents.to(device, vh.dtype) / vh.vae.scaling_factor
        video = vh.vae.decode(z, tile=tile, progress=progress)
    frames = (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)  # [B, 3, T, H, W] -> [B, T, H, W, 3]
    return frames.flatten(0, 1).cpu()


def vae_encode(
    vh: VAEHandle,
    video: torch.Tensor,
    device: torch.device,
    offload: torch.device,
    tile: VAETiling | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Video [B, 3, T, H, W] in -1..1 -> scaled latents (the posterior's mean) float32 on the CPU."""
    with on_device(vh.vae, device, offload, vh.memory):
        latents = C.encode_mode(vh.vae, video.to(device, vh.dtype), tile=tile, progress=progress)
    return latents.float().cpu()
