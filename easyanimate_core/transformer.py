"""The EasyAnimate MMDiT used by V5 and V5.1 checkpoints.

Parameter names follow the original EasyAnimate checkpoints (``attn1`` holds the video projections,
``attn2`` the text projections of multi-modal blocks); diffusers-layout weights are renamed on load
(see ``loading.py``). Blocks with index ``>= mmdit_layers`` are single-stream: text and video tokens go
through the same projections, as in the original implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .attention import attention
from .configs import TransformerConfig
from .teacache import TeaCache

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [T*H*W, head_dim] float32


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps. ``[N] -> [N, dim]`` float32."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    args = t[:, None].float() * torch.exp(exponent)[None]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _rope_1d(dim: int, pos: torch.Tensor, theta: float = 10000.0) -> Rope:
    """cos/sin of ``pos * freq`` with each frequency repeated twice (interleaved pairs). ``[S] -> [S, dim]``."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim)
    angles = torch.outer(pos, freqs)  # [S, dim/2]
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def rope_3d(head_dim: int, frames: int, height: int, width: int, device: torch.device | None = None) -> Rope:
    """3D RoPE of a ``frames x height x width`` token grid (EasyAnimate: 1/4 of head_dim for time, 3/8 each space).

    Spatial positions are those of the grid resized and centre-cropped into a 30x45 base grid (the
    trained 60x90 latent size over patch 2), sampled as ``linspace(start, stop*(n-1)/n, n)``.
    Returns ``(cos, sin)``, each ``[frames*height*width, head_dim]``.
    """
    base_h, base_w = 30, 45
    if height / width > base_h / base_w:
        rh, rw = base_h, int(round(base_h / height * width))
    else:
        rw, rh = base_w, int(round(base_w / width * height))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))

    def grid(start: int, stop: int, n: int) -> torch.Tensor:
        return torch.linspace(start, stop * (n - 1) / n, n, dtype=torch.float32, device=device)

    dim_t, dim_s = head_dim // 4, head_dim // 8 * 3
    parts = [
        (_rope_1d(dim_t, grid(0, frames, frames)), (frames, 1, 1)),
        (_rope_1d(dim_s, grid(top, top + rh, height)), (1, height, 1)),
        (_rope_1d(dim_s, grid(left, left + rw, width)), (1, 1, width)),
    ]
    out = []
    for i in range(2):  # cos, then sin
        axes = [p[i].view(*shape, -1).expand(frames, height, width, -1) for p, shape in parts]
        out.append(torch.cat(axes, dim=-1).reshape(frames * height * width, -1))  # [THW, head_dim]
    return out[0], out[1]


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, H, L, D]`` by ``rope`` (``[L, D]`` each); math in float32.

    Eagerly this is one complex multiply (3 passes over ``x`` instead of 8, same values); under torch.compile
    the real-valued form, which the compiler fuses into one kernel.
    """
    cos, sin = rope
    if not torch.compiler.is_compiling():
        turn = torch.complex(cos[:, ::2], sin[:, ::2])  # [L, D/2]: cos and sin are repeated per pair
        pairs = x.float().unflatten(-1, (-1, 2))  # keeps x's layout: [B, L, H, D] memory seen as [B, H, L, D]
        if pairs.stride(-1) != 1 or any(st % 2 for st in pairs.stride()[:-1]):
            pairs = pairs.contiguous()  # view_as_complex needs (re, im) pairs adjacent and aligned
        pairs = torch.view_as_complex(pairs)  # [B, H, L, D/2]
        return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))  # [B, H, L, D/2, 2]
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Projections(nn.Module):
    """q/k/v/out projections of one token stream, with per-head LayerNorm on q and k."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.to_q, self.to_k, self.to_v = (ops.Linear(dim, dim) for _ in range(3))
        self.norm_q = ops.LayerNorm(head_dim, eps=1e-6, fp32=False)
        self.norm_k = ops.LayerNorm(head_dim, eps=1e-6, fp32=False)
        self.to_out = nn.ModuleList([ops.Linear(dim, dim)])

    def qkv(self, x: torch.Tensor, heads: int, queries: bool = True):
        """``[B, L, dim] -> 3 x [B, heads, L, head_dim]`` (views of ``[B, L, heads, head_dim]`` tensors).

        With ``queries=False`` only keys and values are projected and q is None.
        """
        k, v = (p(x).unflatten(2, (heads, -1)) for p in (self.to_k, self.to_v))
        # normalise while the heads are still contiguous: on the transposed view LayerNorm would copy first
        k, v = self.norm_k(k).transpose(1, 2), v.transpose(1, 2)
        if not queries:
            return None, k, v
        return self.norm_q(self.to_q(x).unflatten(2, (heads, -1))).transpose(1, 2), k, v


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear; submodule names match the checkpoints (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        gelu = nn.Module()
        gelu.proj = ops.Linear(dim, dim * mult)
        self.net = nn.ModuleList([gelu, nn.Identity(), ops.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class AdaNormZero(nn.Module):
    """LayerNorm modulated by the time embedding; returns normed video, normed text and both gates."""

    def __init__(self, cond_dim: int, dim: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.linear = ops.Linear(cond_dim, 6 * dim)
        self.norm = ops.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor, txt: torch.Tensor | None, temb: torch.Tensor):
        """With ``txt=None`` only the video half is computed (the text outputs are None)."""
        shift, scale, gate, t_shift, t_scale, t_gate = self.linear(F.silu(temb)).chunk(6, dim=1)
        x = torch.addcmul(shift[:, None], self.norm(x), 1 + scale[:, None])
        if txt is None:
            return x, None, gate[:, None], None
        txt = torch.addcmul(t_shift[:, None], self.norm(txt), 1 + t_scale[:, None])
        return x, txt, gate[:, None], t_gate[:, None]


class Block(nn.Module):
    """One EasyAnimate transformer block: joint attention over [text, video] tokens, then feed-forward.

    The last block (``last=True``) updates only the video tokens: nothing reads the text stream after it, so its
    text queries, text output projection and text feed-forward are skipped (like SD3's ``context_pre_only``).
    """

    def __init__(self, cfg: TransformerConfig, mmdit: bool, last: bool = False) -> None:
        super().__init__()
        dim, eps, affine = cfg.inner_dim, cfg.norm_eps, cfg.norm_elementwise_affine
        self.heads = cfg.num_attention_heads
        self.last = last
        self.norm1 = AdaNormZero(cfg.time_embed_dim, dim, eps, affine)
        self.attn1 = Projections(dim, cfg.attention_head_dim)
        self.attn2 = Projections(dim, cfg.attention_head_dim) if mmdit else None
        self.norm2 = AdaNormZero(cfg.time_embed_dim, dim, eps, affine)
        self.ff = FeedForward(dim)
        self.txt_ff = FeedForward(dim) if mmdit else None
        self.norm3 = ops.LayerNorm(dim, eps=eps, elementwise_affine=affine) if cfg.after_norm else None
        self.attn_backend = "sdpa"

    def forward(self, x: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor, rope: Rope):
        """``x`` [B, N, dim] video tokens, ``txt`` [B, L, dim] text tokens -> both updated (text as given if last)."""
        # two halves, so the attention temporaries are freed before the feed-forward's 4x-wide ones exist
        x, new_txt = self._attend(x, txt, temb, rope)
        if self.last:
            return self._feed_forward(x, None, temb)[0], txt
        return self._feed_forward(x, new_txt, temb)

    def _attend(self, x: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor, rope: Rope):
        # multi-modal blocks have separate projections per stream; single-stream blocks project the joint sequence
        # with one set, computed here per stream (the same rows of the same products)
        txt_proj = self.attn2 or self.attn1
        n_txt = txt.shape[1]
        nx, ntxt, gate, t_gate = self.norm1(x, txt, temb)
        q, k, v = self.attn1.qkv(nx, self.heads)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        tq, tk, tv = txt_proj.qkv(ntxt, self.heads, queries=not self.last)
        del nx, ntxt
        q = q if self.last else torch.cat([tq, q], 2)
        out = attention(q, torch.cat([tk, k], 2), torch.cat([tv, v], 2), self.attn_backend)
        del q, k, v, tq, tk, tv
        if self.last:
            return torch.addcmul(x, gate, self.attn1.to_out[0](out)), None
        a_txt, a_x = txt_proj.to_out[0](out[:, :n_txt]), self.attn1.to_out[0](out[:, n_txt:])
        del out
        return torch.addcmul(x, gate, a_x), torch.addcmul(txt, t_gate, a_txt)

    def _feed_forward(self, x: torch.Tensor, txt: torch.Tensor | None, temb: torch.Tensor):
        nx, ntxt, gate, t_gate = self.norm2(x, txt, temb)
        fx = self.ff(nx)
        del nx
        if self.norm3 is not None:
            fx = self.norm3(fx)
        if txt is None:
            return torch.addcmul(x, gate, fx), None
        ftxt = (self.txt_ff or self.ff)(ntxt)
        if self.norm3 is not None:
            ftxt = self.norm3(ftxt)
        return torch.addcmul(x, gate, fx), torch.addcmul(txt, t_gate, ftxt)


class TimestepMLP(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(dim, out_dim)
        self.linear_2 = ops.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class OutputNorm(nn.Module):
    """AdaLayerNorm of the output head: ``norm(x) * (1 + scale) + shift`` from the time embedding."""

    def __init__(self, cond_dim: int, dim: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.linear = ops.Linear(cond_dim, 2 * dim)
        self.norm = ops.LayerNorm(dim, eps=eps, elementwise_affine=affine, fp32=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(temb)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


def _text_proj(in_dim: int, dim: int, add_norm: bool) -> nn.Module:
    if not add_norm:
        return ops.Linear(in_dim, dim)
    return nn.Sequential(ops.RMSNorm(in_dim), ops.Linear(in_dim, dim))


BlockRunner = Callable[[int, Block, torch.Tensor, torch.Tensor, torch.Tensor, Rope], tuple[torch.Tensor, torch.Tensor]]


class EasyAnimateTransformer(nn.Module):
    """EasyAnimate MMDiT. Input latents [B, C, T, H, W] -> predicted noise/velocity [B, C, T, H, W]."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        dim, p = cfg.inner_dim, cfg.patch_size
        self.time_embedding = TimestepMLP(dim, cfg.time_embed_dim)
        self.proj = ops.Conv2d(cfg.in_channels, dim, kernel_size=p, stride=p)
        self.text_proj = _text_proj(cfg.text_embed_dim, dim, cfg.add_norm_text_encoder)
        self.text_proj_t5 = None
        if cfg.text_embed_dim_t5 is not None:
            self.text_proj_t5 = _text_proj(cfg.text_embed_dim_t5, dim, cfg.add_norm_text_encoder)
        self.transformer_blocks = nn.ModuleList(
            Block(cfg, i < cfg.mmdit_layers, last=i == cfg.num_layers - 1) for i in range(cfg.num_layers)
        )
        self.norm_final = ops.LayerNorm(
            dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_elementwise_affine, fp32=False
        )
        self.norm_out = OutputNorm(cfg.time_embed_dim, dim, cfg.norm_eps, cfg.norm_elementwise_affine)
        self.proj_out = ops.Linear(dim, p * p * cfg.out_channels)

    def set_attention_backend(self, backend: str) -> None:
        for block in self.transformer_blocks:
            block.attn_backend = backend

    def rope(self, frames: int, height: int, width: int, device: torch.device | None = None) -> Rope:
        """RoPE for a latent grid of ``frames x height x width`` (in latent pixels). Compute once per run."""
        p = self.config.patch_size
        return rope_3d(self.config.attention_head_dim, frames, height // p, width // p, device)

    def embed_time(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[B]`` timesteps -> ``[B, time_embed_dim]`` conditioning."""
        cfg = self.config
        return self.time_embedding(
            timestep_embedding(timestep, cfg.inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift).to(dtype)
        )

    def embed_inputs(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        text_2: torch.Tensor | None = None,
        inpaint: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patchify the latents (with their conditioning channels) and project the text embeddings."""
        x = torch.cat([t for t in (latents, inpaint, control) if t is not None], dim=1)
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"the transformer expects {self.config.in_channels} input channels ({self.config.variant.value} "
                f"variant) but got {x.shape[1]}: check that the conditioning matches the checkpoint"
            )
        b, _, t = x.shape[:3]
        x = self.proj(x.transpose(1, 2).flatten(0, 1))  # [B, C, T, H, W] -> [BT, C, H, W] -> [BT, D, h, w]
        x = x.unflatten(0, (b, t)).transpose(1, 2).flatten(2).transpose(1, 2)  # -> [B, D, T, h, w] -> [B, Thw, D]
        txt = self.text_proj(text)
        if text_2 is not None:
            if self.text_proj_t5 is None:
                raise ValueError("a second text embedding was given, but this transformer has no T5 projection (V5.1)")
            txt = torch.cat([txt, self.text_proj_t5(text_2)], dim=1)
        elif self.text_proj_t5 is not None:
            raise ValueError("this V5 transformer needs the T5 text embedding as well (text_encoder_2)")
        return x, txt

    def head(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Final norms of the video tokens (what TeaCache's residual spans together with the blocks)."""
        return self.norm_out(self.norm_final(x), temb)

    def unpatchify(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Output projection: ``[B, Thw, D]`` normed tokens -> ``[B, C, T, H, W]``."""
        b, _, t, h, w = shape
        p, c = self.config.patch_size, self.config.out_channels
        x = self.proj_out(x).reshape(b, t, h // p, w // p, c, p, p)
        return x.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, t, h, w)  # [B, C, T, h, p, w, p]

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_2: torch.Tensor | None = None,
        inpaint: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        rope: Rope | None = None,
        run_blocks: BlockRunner | None = None,
        cache: TeaCache | None = None,
    ) -> torch.Tensor:
        """Predict the model output for ``latents`` [B, C, T, H, W] at ``timestep`` [B].

        ``text`` [B, L, text_embed_dim] (and ``text_2`` [B, L2, text_embed_dim_t5] for V5); ``inpaint``
        [B, 1 + C, T, H, W] (mask, masked-video latents) for InP; ``control`` [B, Cc, T, H, W] for Control
        and Control-Camera. ``run_blocks`` lets the memory policy wrap each block call (offload, swap);
        ``cache`` (TeaCache) may replace the blocks by the previous step's residual.
        """
        x, txt = self.embed_inputs(latents, text, text_2, inpaint, control)
        temb = self.embed_time(timestep, x.dtype)
        if rope is None:
            rope = self.rope(*latents.shape[2:], device=latents.device)
        if cache is not None and not cache.should_compute(self.transformer_blocks[0].norm1(x, txt, temb)[0]):
            return self.unpatchify(x + cache.residual, latents.shape)
        start = x
        for i, block in enumerate(self.transformer_blocks):
            x, txt = run_blocks(i, block, x, txt, temb, rope) if run_blocks else block(x, txt, temb, rope)
        x = self.head(x, temb)
        if cache is not None:
            cache.residual = x - start
        return self.unpatchify(x, latents.shape)
