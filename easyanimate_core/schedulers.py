"""Scheduler names -> diffusers scheduler classes, built from the checkpoint's scheduler_config.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .loading import read_json

log = logging.getLogger("EasyAnimate")

# Names -> diffusers classes; diffusers is imported on first use (it takes seconds to import).
SCHEDULERS = {
    "Flow": "FlowMatchEulerDiscreteScheduler",
    "DDIM": "DDIMScheduler",
    "Euler": "EulerDiscreteScheduler",
    "Euler A": "EulerAncestralDiscreteScheduler",
    "DPM++": "DPMSolverMultistepScheduler",
    "PNDM": "PNDMScheduler",
}
SCHEDULER_NAMES = list(SCHEDULERS)


def _is_flow(scheduler) -> bool:
    return type(scheduler).__name__ == SCHEDULERS["Flow"]


# diffusers' own defaults for Flow, used when a checkpoint (e.g. a single transformer file) has no scheduler folder.
DEFAULT_FLOW_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
}


def read_scheduler_config(folder: str | Path | None) -> dict[str, Any] | None:
    """The ``scheduler_config.json`` of a checkpoint's ``scheduler/`` folder, or None when absent."""
    if folder is None:
        return None
    path = Path(folder) / "scheduler_config.json"
    if not path.is_file():
        return None
    return read_json(path)  # a JSON object, or a ValueError naming the file


DDPM_SCHEDULERS = [name for name in SCHEDULER_NAMES if name != "Flow"]


def check_scheduler_for(version: str, name: str) -> None:
    """V5.1 is a flow-matching model, V5 a DDPM-family one (the official predict scripts' rule): any other pairing
    runs but makes noise, so it is an error."""
    if version == "V5" and name == "Flow":
        raise ValueError(
            f"EasyAnimate V5 is a DDPM-family model: choose {', '.join(DDPM_SCHEDULERS)} (Flow is for V5.1)"
        )
    if version == "V5.1" and name != "Flow":
        raise ValueError(f"EasyAnimate V5.1 is a flow-matching model: choose Flow ({name} is for V5)")


def build_scheduler(name: str, config: dict[str, Any] | None, shift: float | None = None, version: str | None = None):
    """A fresh diffusers scheduler ``name`` configured from ``config`` (keys it does not know are ignored).

    ``shift`` overrides the Flow scheduler's timestep shift (larger values spend more steps at high noise).
    ``version`` (the model's, "V5" or "V5.1") makes a scheduler of the other family an error.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    if version is not None:
        check_scheduler_for(version, name)
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    if config is None:
        if name != "Flow":
            raise ValueError(
                f"scheduler {name!r} needs the checkpoint's scheduler/scheduler_config.json, which a single "
                "transformer file lacks: load the whole checkpoint folder with Load EasyAnimate Model"
            )
        config = DEFAULT_FLOW_CONFIG
    trained_flow = config.get("_class_name") == "FlowMatchEulerDiscreteScheduler"
    if trained_flow != (name == "Flow"):
        log.warning(
            "scheduler %r on a checkpoint whose scheduler config is %s: EasyAnimate V5.1 is sampled with 'Flow', "
            "V5 with DDIM/Euler/Euler A/DPM++/PNDM",
            name,
            config.get("_class_name"),
        )
    overrides = {}
    if shift is not None:
        if name != "Flow":
            raise ValueError(
                f"shift applies to the 'Flow' scheduler (V5.1 models) only; this run uses {name!r}: leave shift unset"
            )
        if not 0 < shift < float("inf"):  # also NaN
            raise ValueError(f"shift must be a positive number, got {shift}")
        overrides["shift"] = float(shift)
    return cls.from_config(dict(config), **overrides)


def set_timesteps(scheduler, steps: int, denoise: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Set ``steps`` timesteps and keep the last ``round_down(steps * denoise)`` of them (video-to-video).

    Mirrors the EasyAnimate pipelines: Flow gets ``mu=1`` (used only with dynamic shifting), and for
    ``denoise < 1`` the scheduler's begin index moves to the first kept step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if type(scheduler).__name__ == SCHEDULERS["PNDM"] and steps < 4:
        raise ValueError(
            f"PNDM needs at least 4 steps (its first steps are Runge-Kutta warm-up), got {steps}; nearest: 4"
        )
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    if _is_flow(scheduler):
        scheduler.set_timesteps(steps, device=device, mu=1)
    else:
        scheduler.set_timesteps(steps, device=device)
    kept = min(int(steps * denoise), steps)
    if kept < 1:
        raise ValueError(f"denoise {denoise} keeps no step of {steps}; raise denoise to at least {1 / steps:.3f}")
    start = (steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def noise_latents(scheduler, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """Clean ``latents`` noised to ``timestep`` (the start of a video-to-video run)."""
    t = timestep.reshape(1).repeat(latents.shape[0])
    if _is_flow(scheduler):
        return scheduler.scale_noise(latents, t, noise)
    return scheduler.add_noise(latents, noise, t)
