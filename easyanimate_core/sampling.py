"""One denoising loop for every mode: text-, image-, video- and control-to-video.

The loop talks to its host only through arguments: ``progress(step, total, latents)`` after every step
and ``should_stop()`` before every step (raising :class:`Interrupted`, which leaves models untouched).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .schedulers import noise_latents, set_timesteps
from .teacache import V5_NOTE, TeaCache, coefficients_for
from .transformer import BlockRunner, EasyAnimateTransformer

Progress = Callable[[int, int, torch.Tensor], None]


class Interrupted(Exception):
    """Sampling was asked to stop between two steps."""


@dataclass(frozen=True)
class Conditioning:
    """Latent-space conditioning for one sampling run (batch as in the latents; no CFG duplication).

    inpaint:      [B, 1 + C, t, h, w] mask and masked-video latents (InP checkpoints).
    control:      [B, Cc, t, h, w] control (+ ref-image) latents or camera embedding (Control checkpoints).
    init_latents: [B, C, t, h, w] scaled clean latents to start from when denoise < 1 (video-to-video).
    keep_mask:    [B, 1, t, h, w] for checkpoints without inpaint channels: 1 regenerates, 0 keeps
                  ``init_latents`` (noised to the current level) after every step.
    """

    inpaint: torch.Tensor | None = None
    control: torch.Tensor | None = None
    init_latents: torch.Tensor | None = None
    keep_mask: torch.Tensor | None = None


def initial_noise(
    shape: tuple[int, ...], seed: int, indices: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Generator]:
    """Noise drawn the way diffusers draws it: a CPU generator seeded with ``seed``, float32 ``randn``.

    ``indices`` (ComfyUI's LATENT ``batch_index``): batch item i gets the noise of item ``indices[i]`` of a batch
    drawn whole, as KSampler does, so a video taken out of a batch (Latent From Batch) starts from the noise it
    had in the batch. The generator is returned so that later random draws (noise augmentation, ancestral
    steps) continue the same stream, as in the EasyAnimate pipelines. With ``indices`` it continues after item
    ``max(indices)`` of the whole batch (the conditioning nodes' noise augmentation, drawn for a batch of one
    after its own draw of the initial noise, does not follow it then).
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    if indices is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32), generator
    # item by item, keeping only those asked for (a large index costs time, not memory); the same numbers as one
    # draw of the whole batch, since an item's size is a multiple of 16 (randn's CPU chunk) with 16 channels
    wanted, items = set(indices), {}
    for i in range(max(indices) + 1):
        item = torch.randn((1, *shape[1:]), generator=generator, dtype=torch.float32)
        if i in wanted:
            items[i] = item
    return torch.cat([items[i] for i in indices]), generator


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, sec. 3.4): match the std of the conditional prediction."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


def _step_kwargs(scheduler, generator: torch.Generator | None) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kw = {}
    if "eta" in params:
        kw["eta"] = 0.0
    if "generator" in params:
        kw["generator"] = generator
    return kw


def _cfg_batch(t: torch.Tensor | None, do_cfg: bool) -> torch.Tensor | None:
    return None if t is None else (torch.cat([t, t]) if do_cfg else t)


@torch.no_grad()
def sample(
    model: EasyAnimateTransformer,
    scheduler,
    text,
    negative,
    noise: torch.Tensor,
    *,
    steps: int,
    cfg: float,
    guidance_rescale: float = 0.0,
    denoise: float = 1.0,
    cond: Conditioning | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    run_blocks: BlockRunner | None = None,
    teacache: float = 0.0,
    teacache_coefficients: tuple[float, ...] | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` [B, C, t, h, w] into latents (float32, scaled like the VAE's latents).

    ``text``/``negative`` are :class:`~easyanimate_core.text.TextEmbeds` (``negative`` unused when
    ``cfg <= 1``). ``scheduler`` must be fresh (diffusers schedulers keep a step index). With
    ``denoise < 1`` the run starts from ``cond.init_latents`` noised to the first kept timestep.
    ``teacache > 0`` enables TeaCache with that threshold (fresh state each run; V5.1 models only, see
    ``teacache.coefficients_for``); the number of skipped transformer calls is written to
    ``stats["teacache_skipped"]`` when ``stats`` is given (and ``stats["teacache_note"]`` when a V5 model ran
    every step despite a threshold).
    """
    cond = cond or Conditioning()
    device = torch.device(device)
    if not -float("inf") < cfg < float("inf"):  # NaN or inf would make a video of NaN
        raise ValueError(f"cfg must be a finite number, got {cfg}")
    do_cfg = cfg > 1.0
    timesteps = set_timesteps(scheduler, steps, denoise, device)
    noise = noise.to(device=device, dtype=torch.float32)
    if denoise < 1.0:
        if cond.init_latents is None:
            raise ValueError("denoise below 1 needs an input video or latents to start from")
        latents = noise_latents(scheduler, cond.init_latents.to(device, torch.float32), noise, timesteps[:1])
    else:
        latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)

    videos = latents.shape[0]

    def batch(pos, neg):
        """Prompt embeddings for every video of the batch, the negative half first under CFG."""
        if pos is None:
            return None
        pos = pos.expand(videos, *pos.shape[1:]) if pos.shape[0] == 1 else pos
        if do_cfg:
            neg = neg.expand(videos, *neg.shape[1:]) if neg.shape[0] == 1 else neg
            pos = torch.cat([neg, pos])
        return pos.to(device, dtype)

    if do_cfg and negative is None:
        raise ValueError("cfg above 1 needs a negative prompt embedding (an empty prompt is fine)")
    txt = batch(text.embeds, negative.embeds if do_cfg else None)
    txt_2 = batch(text.embeds_2, negative.embeds_2 if do_cfg else None)
    inpaint = _cfg_batch(None if cond.inpaint is None else cond.inpaint.to(device, dtype), do_cfg)
    control = _cfg_batch(None if cond.control is None else cond.control.to(device, dtype), do_cfg)
    rope = model.rope(*latents.shape[2:], device=device)
    step_kw = _step_kwargs(scheduler, generator)
    keep = None
    if cond.keep_mask is not None:
        if cond.init_latents is None:
            raise ValueError("a keep mask needs the input video's latents")
        keep = (cond.keep_mask.to(device, torch.float32), cond.init_latents.to(device, torch.float32))

    total = len(timesteps)
    cache = None
    coefficients = teacache_coefficients or coefficients_for(model)
    if teacache > 0 and coefficients is not None:
        cache = TeaCache(threshold=teacache, num_steps=total, coefficients=coefficients)
    for i, t in enumerate(timesteps):
        if should_stop is not None and should_stop():
            raise Interrupted(f"stopped before step {i + 1} of {total}")
        x = torch.cat([latents, latents]) if do_cfg else latents
        if hasattr(scheduler, "scale_model_input"):
            x = scheduler.scale_model_input(x, t)
        # the timestep in the compute dtype, as the reference pipelines pass it (bf16 turns 981 into 980)
        t_in = t.to(device=device, dtype=dtype).reshape(1).expand(x.shape[0])
        pred = model(x.to(dtype), t_in, txt, txt_2, inpaint, control, rope=rope, run_blocks=run_blocks, cache=cache)
        pred = pred.float()
        if do_cfg:
            uncond, pred_text = pred.chunk(2)
            pred = uncond + cfg * (pred_text - uncond)
            if guidance_rescale > 0.0:
                pred = rescale_guidance(pred, pred_text, guidance_rescale)
        latents = scheduler.step(pred, t, latents, **step_kw, return_dict=False)[0]
        if keep is not None:
            mask, init = keep
            if i < total - 1:
                init = noise_latents(scheduler, init, noise, timesteps[i + 1 : i + 2])
            latents = (1 - mask) * init + mask * latents
        if progress is not None:
            progress(i + 1, total, latents)
    if stats is not None:
        stats["teacache_skipped"] = 0 if cache is None else cache.skipped
        stats["transformer_calls"] = total - stats["teacache_skipped"]
        if teacache > 0 and cache is None:
            stats["teacache_note"] = V5_NOTE
    return latents
