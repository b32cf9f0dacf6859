"""Latent previews: a linear latent -> RGB map fitted from the loaded VAE itself.

A previewer that runs the whole VAE every step would cost more than the step. Like ComfyUI's
``Latent2RGBPreviewer``, a preview here is ``rgb = latents @ factors + bias`` per latent pixel. Instead
of a table published per model, the table is fitted once per loaded VAE: decode a few random smooth
latents of one frame, average-pool the decoded RGB down to the latent grid, and solve a least-squares
problem for the C x 3 factors and the bias. Any EasyAnimate VAE (or fine-tune of one) gets its own map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .memory import MemoryPolicy, on_device
from .vae import MagvitVAE


@dataclass(frozen=True)
class LatentRGB:
    """A linear latent -> RGB map for scaled latents; RGB in -1..1 as the VAE decodes it.

    The attribute names are ComfyUI's LatentFormat ones, so ComfyUI's previewers (and
    ``nodes.host.make_progress_callback``) take this object as it is.
    """

    latent_rgb_factors: tuple[tuple[float, float, float], ...]  # C rows of (R, G, B)
    latent_rgb_factors_bias: tuple[float, float, float]

    def to_rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, C, T, h, w] -> RGB [B, 3, T, h, w] in about -1..1 (not clamped)."""
        factors = torch.tensor(self.latent_rgb_factors, dtype=torch.float32, device=latents.device)  # [C, 3]
        bias = torch.tensor(self.latent_rgb_factors_bias, dtype=torch.float32, device=latents.device)
        rgb = latents.float().movedim(1, -1) @ factors + bias  # [B, T, h, w, C] @ [C, 3] -> [B, T, h, w, 3]
        return rgb.movedim(-1, 1)


def smooth_latents(n: int, channels: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Random scaled latents [n, C, 1, h, w] of unit variance that vary slowly across the frame, as the
    latents of real pictures do (a 2x2 random grid upsampled bilinearly, plus a little fine noise)."""
    h, w = size
    coarse = torch.randn(n, channels, 2, 2, generator=generator)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    fine = torch.randn(n, channels, h, w, generator=generator)
    return (smooth + 0.25 * fine)[:, :, None]  # [n, C, h, w] -> [n, C, 1, h, w]


@torch.no_grad()
def fit_latent_rgb(
    vae: MagvitVAE,
    *,
    samples: int = 24,
    size: tuple[int, int] = (6, 6),
    seed: int = 0,
    ridge: float = 1e-3,
) -> LatentRGB:
    """Fit the linear latent -> RGB map of ``vae`` (on the device and in the dtype it is in now)."""
    param = next(vae.parameters())
    generator = torch.Generator("cpu").manual_seed(seed)
    c, s = vae.latent_channels, vae.spatial_compression
    z = smooth_latents(samples, c, size, generator)  # [n, C, 1, h, w], scaled
    video = vae.decode((z / vae.scaling_factor).to(param.device, param.dtype))  # [n, 3, 1, h*s, w*s]
    rgb = F.avg_pool2d(video[:, :, 0].float().cpu(), kernel_size=s)  # [n, 3, h, w]
    x = z[:, :, 0].movedim(1, -1).reshape(-1, c).double()  # [n*h*w, C]
    y = rgb.movedim(1, -1).reshape(-1, 3).double()  # [n*h*w, 3]
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # [N, C + 1], the last column for the bias
    gram = x1.T @ x1 + ridge * len(x1) * torch.eye(c + 1, dtype=x.dtype)
    solution = torch.linalg.solve(gram, x1.T @ y)  # [C + 1, 3]
    factors = tuple(tuple(float(v) for v in row) for row in solution[:c])
    bias = tuple(float(v) for v in solution[c])
    return LatentRGB(factors, bias)  # type: ignore[arg-type]


def latent_rgb_for(
    vae: MagvitVAE, device: torch.device, offload: torch.device, policy: MemoryPolicy = MemoryPolicy()
) -> LatentRGB:
    """``fit_latent_rgb`` with the VAE placed on ``device`` for the fit (and sent back under offloading)."""
    with on_device(vae, device, offload, policy):
        return fit_latent_rgb(vae)
