"""TeaCache: skip transformer calls whose input barely changed since the last computed step.

Follows "Timestep Embedding Aware Cache" (Liu et al. 2024, https://github.com/ali-vilab/TeaCache) as
EasyAnimate applies it: the relative L1 change of block 0's modulated input, rescaled by a polynomial
fitted per model size, is accumulated; while the sum stays under the threshold the previous step's
residual (blocks and output norms) is reused instead of running the blocks. The first and last steps
always compute. The state lives in one object per sampling run, so nothing carries over between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Polynomial coefficients (highest degree first) published with EasyAnimate V5.1, fitted on
# EasyAnimateV5.1-{7b,12b}-zh-InP and used for its T2V, InP and Control checkpoints alike.
COEFFICIENTS = {
    "7b": (1.07862322, -4.19362456, 3.06725828, 0.33161686, 0.02374758),
    "12b": (-10.47857366, 8.33844143, -0.78477557, 0.68798618, 0.0136149),
}

# The threshold EasyAnimate's own inference scripts run with (predict_t2v/i2v/v2v/v2v_control.py and the
# Gradio app: enable_teacache = True, teacache_threshold = 0.08); our nodes, CLI and API default to it.
# 0 turns TeaCache off and gives the exact output.
DEFAULT_THRESHOLD = 0.08


def coefficients_for(model: torch.nn.Module) -> tuple[float, ...] | None:
    """The published coefficients for ``model``'s size, or None for a V5 model: EasyAnimate fits TeaCache for
    V5.1 only (its ``get_teacache_coefficients`` knows v5.1-7b and v5.1-12b), so its scripts run V5 without it."""
    if model.config.version != "V5.1":
        return None
    return COEFFICIENTS[model_size(model)]


V5_NOTE = "TeaCache is calibrated for V5.1 only (as in EasyAnimate's scripts): this V5 model ran every step"


def model_size(model: torch.nn.Module) -> str:
    """'12b' for models above 9.5 billion parameters, else '7b' (the two published V5.1 sizes)."""
    n = sum(p.numel() for p in model.parameters())
    return "12b" if n > 9.5e9 else "7b"


@dataclass
class TeaCache:
    threshold: float
    num_steps: int
    coefficients: tuple[float, ...]
    step: int = 0
    skipped: int = 0
    accumulated: float = 0.0
    previous_input: torch.Tensor | None = field(default=None, repr=False)
    residual: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"TeaCache threshold must be >= 0, got {self.threshold}")

    def _rescale(self, x: float) -> float:
        y = 0.0
        for c in self.coefficients:
            y = y * x + c
        return y

    def should_compute(self, modulated: torch.Tensor) -> bool:
        """Decide for this step from block 0's modulated input (called once per transformer call)."""
        first_or_last = self.step == 0 or self.step == self.num_steps - 1
        compute = True
        if not first_or_last and self.previous_input is not None and self.residual is not None:
            prev = self.previous_input
            rel = ((modulated - prev).abs().mean() / prev.abs().mean()).item()
            self.accumulated += self._rescale(rel)
            compute = self.accumulated >= self.threshold
        if compute:
            self.accumulated = 0.0
        else:
            self.skipped += 1
        self.previous_input = modulated
        self.step += 1
        return compute
