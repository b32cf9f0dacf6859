"""Stand-in for `comfy/utils.py`: ProgressBar with its global hook, and `common_upscale`."""

import time

import numpy as np
import torch
from PIL import Image

PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK = None


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


# ComfyUI throttles the hook (and with it the "progress" messages and its interrupt check): the first and the
# last update and every update with a preview go out at once, others only 0.1 s and 0.5 % after the last one sent.
PROGRESS_THROTTLE_MIN_INTERVAL = 0.1
PROGRESS_THROTTLE_MIN_PERCENT = 0.5


class ProgressBar:
    """Reads the global hook when it is made, as ComfyUI's does; the hook gets (value, total, preview, node_id=),
    throttled as ComfyUI's ``update_absolute`` throttles it."""

    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id
        self._last_update_time = 0.0
        self._last_sent_value = -1

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is None:
            return
        now = time.perf_counter()
        if preview is not None or self._last_sent_value < 0 or value >= self.total:
            send = True
        else:
            percent = (value - max(0, self._last_sent_value)) / self.total * 100 if self.total > 0 else 100
            elapsed = now - self._last_update_time
            send = elapsed >= PROGRESS_THROTTLE_MIN_INTERVAL and percent >= PROGRESS_THROTTLE_MIN_PERCENT
        if send:
            self.hook(self.current, self.total, preview, node_id=self.node_id)
            self._last_update_time = now
            self._last_sent_value = value

    def update(self, value):
        self.update_absolute(self.current + value)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # [B, C, H, W] -> PIL per image -> [B, C, height, width]
    out = []
    for image in samples:
        array = np.clip(255.0 * image.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)
        pil = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        pil = pil.resize((width, height), resample=Image.Resampling.LANCZOS)
        tensor = torch.from_numpy(np.array(pil).astype(np.float32) / 255.0)
        out.append(tensor.reshape(height, width, -1).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, height, width]; "center" crops to the target aspect first."""
    if crop == "center":
        old_width, old_height = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        samples = samples[..., y : old_height - y, x : old_width - x]
    if upscale_method == "lanczos":
        return _lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=upscale_method)
