"""One attention entry point; the backend is chosen by name elsewhere.

``attention(q, k, v, backend)`` takes ``[B, heads, L, head_dim]`` tensors and returns ``[B, L, heads * head_dim]``.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash", "sage")
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}


def available_backends() -> list[str]:
    """Backends usable here: sdpa always, flash-attn and SageAttention only when installed."""
    return ["sdpa"] + [name for name, pkg in _PACKAGES.items() if importlib.util.find_spec(pkg) is not None]


def check_backend(backend: str) -> None:
    """Raise a clear error for an unknown backend or one whose package is not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    pkg = _PACKAGES.get(backend)
    if pkg is not None and importlib.util.find_spec(pkg) is None:
        raise ValueError(
            f"attention backend {backend!r} needs the Python package {pkg!r}, which is not installed; "
            f"install it (pip install {pkg.replace('_', '-')}) or choose 'sdpa'"
        )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Scaled dot-product attention, no mask. ``[B, H, L, D]`` x3 -> ``[B, L, H*D]``."""
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    elif backend == "flash":
        from flash_attn import flash_attn_func

        # flash-attn wants [B, L, H, D]
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    elif backend == "sage":
        from sageattention import sageattn

        out = sageattn(q, k, v, tensor_layout="HND", is_causal=False)
    else:
        check_backend(backend)
        raise AssertionError("unreachable")
    return out.transpose(1, 2).flatten(2)  # [B, H, L, D] -> [B, L, H*D]
