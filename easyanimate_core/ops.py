"""Layers whose weights may be stored in one dtype/device and computed in another.

ComfyUI builds its models through an ``operations`` object for the same reason: the model code stays
plain while weight casting (fp8 storage, bf16 compute), offload and LoRA patching live here.
Every layer casts its parameters to the input's dtype and device at call time; when they already
match, nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def cast_to(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` on ``like``'s device and in its dtype, without a copy when both already match."""
    if t is None or (t.dtype == like.dtype and t.device == like.device):
        return t
    return t.to(device=like.device, dtype=like.dtype, non_blocking=True)


# A LoRA side branch attached to a layer for one sampling run (see ``lora.applied``):
# (down, up, scale) with down [r, in] / up [out, r] for Linear, down [r, in, kh, kw] / up [out, r, 1, 1] for Conv2d.
LoraBranch = tuple[torch.Tensor, torch.Tensor, float]


class Linear(nn.Linear):
    """``y = x W^T + b + sum(scale * up(down(x)))`` over the LoRA branches attached to this layer (usually none).

    The branches are a plain attribute, not parameters: they never enter the state dict, are never merged
    into the stored weight, and still apply when a memory policy runs the block via ``functional_call``.
    """

    lora_branches: tuple[LoraBranch, ...] = ()
    fp8_matmul: bool = False  # set for a run by ``fp8_matmul_enabled``: multiply fp8 weights in fp8
    fp8_rowwise: bool = True  # with fp8_matmul: per-token activation scales (else one per tensor)
    fp8_weight_scale: torch.Tensor | None = None  # with fp8_matmul: the weights' (unit) scales, made once per run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_matmul and self.weight.dtype == FP8:
            y = fp8_linear(x, self.weight, cast_to(self.bias, x), self.fp8_rowwise, self.fp8_weight_scale)
        else:
            y = F.linear(x, cast_to(self.weight, x), cast_to(self.bias, x))
        for down, up, scale in self.lora_branches:
            h = F.linear(x, cast_to(down, x))  # [..., r]
            # y += scale * h @ up^T as one GEMM accumulating into y (no [..., out] temporary)
            y.view(-1, y.shape[-1]).addmm_(h.view(-1, h.shape[-1]), cast_to(up, x).t(), alpha=scale)
        return y


def rowwise_fp8(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` takes per-row scales on ``device``: the CPU, and CUDA from Hopper (9.0) on;
    Ada (8.9) GPUs get one scale per tensor."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (9, 0)


def weight_scale(out_features: int, rowwise: bool, device: torch.device) -> torch.Tensor:
    """The scale ``torch._scaled_mm`` applies to stored fp8 weights: one (they are stored unscaled), per output
    channel for rowwise scaling, else a single number."""
    return torch.ones((1, out_features) if rowwise else (), device=device, dtype=torch.float32)


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    rowwise: bool = True,
    scale_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x W^T + b`` as one fp8 GEMM: ``x`` quantised to e4m3 with its own scale, ``W`` used as stored.

    With ``rowwise`` each token gets the scale ``amax(|x_row|) / 448``, so every token uses e4m3's whole range;
    otherwise one scale for the whole tensor (no activation saturates either way). The GEMM accumulates in
    float32 and applies the scales in its epilogue (``torch._scaled_mm``). ``scale_b`` is :func:`weight_scale`'s
    (made here when not given; a run makes it once per layer).
    """
    rows = x.reshape(-1, x.shape[-1])
    amax = rows.abs().amax(dim=1, keepdim=True) if rowwise else rows.abs().amax()
    scale = amax.float().clamp(min=1e-12) / FP8_MAX  # [M, 1] or []
    xq = (rows / scale).to(FP8)
    weight = weight.to(x.device, non_blocking=True)
    if scale_b is None:
        scale_b = weight_scale(weight.shape[0], rowwise, x.device)
    # CUDA's rowwise-scaled fp8 GEMM writes bf16 only
    out_dtype = torch.bfloat16 if x.device.type == "cuda" and rowwise else x.dtype
    y = torch._scaled_mm(xq, weight.t(), scale_a=scale, scale_b=scale_b, out_dtype=out_dtype)
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], weight.shape[0])


def fp8_matmul_layers(model: nn.Module) -> list[Linear]:
    """The layers of ``model`` whose weights are stored in fp8 (what ``fp8_matmul_enabled`` switches)."""
    return [m for m in model.modules() if isinstance(m, Linear) and m.weight.dtype == FP8]


@contextmanager
def fp8_matmul_enabled(model: nn.Module, enabled: bool = True, device: torch.device | None = None) -> Iterator[None]:
    """Within the block, ``model``'s fp8-stored linear layers multiply in fp8 on ``device`` (see ``fp8_linear``).

    The switches are instance attributes (decided here, once, not inside a compiled forward) removed in
    ``finally``; weights are never touched.
    """
    layers = fp8_matmul_layers(model) if enabled else []
    device = torch.device(device or "cpu")
    rowwise = rowwise_fp8(device)
    switches = ("fp8_matmul", "fp8_rowwise", "fp8_weight_scale")
    try:
        for m in layers:
            m.fp8_matmul, m.fp8_rowwise = True, rowwise
            m.fp8_weight_scale = weight_scale(m.out_features, rowwise, device)
        yield
    finally:
        for m in layers:
            for name in switches:
                m.__dict__.pop(name, None)


class Conv2d(nn.Conv2d):
    """Conv2d with optional LoRA branches: a ``down`` conv with this layer's kernel and stride, then a 1x1 ``up``."""

    lora_branches: tuple[LoraBranch, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))
        for down, up, scale in self.lora_branches:
            h = F.conv2d(x, cast_to(down, x), None, self.stride, self.padding, self.dilation)
            y = y.add(F.conv2d(h, cast_to(up, x)), alpha=scale)
        return y


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input dtype (EasyAnimate's FP32LayerNorm).

    With ``fp32=False`` it computes in the input dtype, like ``torch.nn.LayerNorm`` on half inputs.
    """

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, fp32: bool = True, **kw) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine, **kw)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CUDA's kernel already computes half inputs in float32 and rounds once, so the upcast copy (three passes
        # over x instead of one) only pays on the CPU, whose half kernel rounds differently
        upcast = self.fp32 and x.dtype != torch.float32 and x.device.type != "cuda"
        ref = x.float() if upcast else x
        weight, bias = self.weight, self.bias
        if self.fp32 and not upcast and weight is not None and weight.dtype != x.dtype:
            ref = x.float()  # float32 affine parameters with a half input: keep them exact
        y = F.layer_norm(ref, self.normalized_shape, cast_to(weight, ref), cast_to(bias, ref), self.eps)
        return y.to(x.dtype)


class RMSNorm(nn.Module):
    """RMS norm with a learned scale; statistics in float32 (as EasyAnimate and diffusers compute them)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return x * cast_to(self.weight, x)
