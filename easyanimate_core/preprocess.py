"""Preprocessing of control videos: Canny edges, computed frame batch by frame batch.

The edge detector is kornia's ``kornia.filters.canny`` (Gaussian blur, Sobel gradients, non-maximum
suppression, double threshold with hysteresis); thresholds are on the gradient magnitude of the 0..1
grayscale image, as kornia defines them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CANNY_CHUNK = 16  # frames per kornia call: bounds memory, and the host can interrupt between chunks


def canny(
    images: torch.Tensor,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    *,
    kernel_size: int = 5,
    sigma: float = 1.0,
    device: torch.device | str = "cpu",
    chunk: int = CANNY_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """IMAGE frames [N, H, W, C] 0..1 -> Canny edges [N, H, W, 3] float32 (0 or 1, the same in every channel).

    ``kernel_size`` (odd) and ``sigma`` set the Gaussian blur before the gradients. ``progress(done, total)``
    is called after every chunk of frames; it may raise to stop the work (the host's interrupt).
    """
    from kornia.filters import canny as kornia_canny

    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected IMAGE frames [N, H, W, C], got shape {tuple(images.shape)}")
    if not 0.0 <= low_threshold < high_threshold <= 1.0:
        raise ValueError(
            f"Canny thresholds must satisfy 0 <= low < high <= 1; got low={low_threshold}, high={high_threshold}: "
            "lower low_threshold or raise high_threshold"
        )
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"the blur kernel_size must be odd and at least 3; got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"the blur sigma must be positive; got {sigma}")
    height, width = images.shape[1:3]
    fits = 2 * min(height, width) - 1  # the blur's reflect padding (kernel_size // 2) must be shorter than a side
    if kernel_size > fits:
        if fits < 3:
            raise ValueError(f"the {width}x{height} frames are too small for Canny edges: they need at least 2x2")
        raise ValueError(f"kernel_size {kernel_size} is too large for the {width}x{height} frames: use at most {fits}")
    total = images.shape[0]
    out = torch.empty(total, *images.shape[1:3], 3, dtype=torch.float32)
    for start in range(0, total, chunk):
        x = images[start : start + chunk, ..., :3].to(device, torch.float32)
        x = x.movedim(-1, 1)  # [n, H, W, C] -> [n, C, H, W]
        _, edges = kornia_canny(x, low_threshold, high_threshold, (kernel_size, kernel_size), (sigma, sigma))
        edges = edges.float().cpu().movedim(1, -1)  # [n, 1, H, W] -> [n, H, W, 1]
        out[start : start + chunk] = edges.expand(-1, -1, -1, 3)
        if progress is not None:
            progress(min(start + chunk, total), total)
    return out
