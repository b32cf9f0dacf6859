"""One attention entry point; the backend is chosen by name elsewhere.

``attention(q, k, v, backend)`` takes ``[B, heads, L, head_dim]`` tensors and returns ``[B, L, heads * head_dim]``.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash", "flash3", "sage")
_PACKAGES = {"flash": "flash_attn", "flash3": "flash_attn_interface", "sage": "sageattention"}
_INSTALL = {
    "flash": "pip install flash-attn",
    "flash3": "build FlashAttention 3 from the hopper/ folder of Dao-AILab/flash-attention; H100/H200 only",
    "sage": "pip install sageattention",
}


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
            f"install it ({_INSTALL[backend]}) or choose 'sdpa'"
        )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Scaled dot-product attention, no mask. ``[B, H, L, D]`` x3 -> ``[B, L, H*D]``."""
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    elif backend == "flash":
        from flash_attn import flash_attn_func

        # flash-attn wants [B, L, H, D]
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    elif backend == "flash3":
        from flash_attn_interface import flash_attn_func as flash3_func

        out = flash3_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = (out[0] if isinstance(out, tuple) else out).transpose(1, 2)  # some releases also return the LSE
    elif backend == "sage":
        from sageattention import sageattn

        out = sageattn(q, k, v, tensor_layout="HND", is_causal=False)
    else:
        check_backend(backend)
        raise AssertionError("unreachable")
    return out.transpose(1, 2).flatten(2)  # [B, H, L, D] -> [B, L, H*D]
