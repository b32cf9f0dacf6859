"""Stand-in for ComfyUI's `latent_preview.py` (Latent2RGB previews only; no TAESD)."""

import comfy.utils
import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image

default_preview_method = args.preview_method
MAX_PREVIEW_RESOLUTION = args.preview_size


def preview_to_image(preview_image: torch.Tensor) -> Image.Image:
    """[H, W, 3] in -1..1 -> PIL image (0..255 truncated to bytes, as ComfyUI's)."""
    preview_image = ((preview_image.cpu().float() + 1.0) / 2.0).clamp(0, 1).mul(0xFF)
    return Image.fromarray(preview_image.to(dtype=torch.uint8).numpy())


class LatentPreviewer:
    def decode_latent_to_preview(self, x0):
        pass

    def decode_latent_to_preview_image(self, preview_format, x0):
        return ("JPEG", self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION)


class Latent2RGBPreviewer(LatentPreviewer):
    def __init__(self, latent_rgb_factors, latent_rgb_factors_bias=None):
        self.latent_rgb_factors = torch.tensor(latent_rgb_factors).transpose(0, 1)  # [C, 3] -> [3, C]
        self.latent_rgb_factors_bias = (
            None if latent_rgb_factors_bias is None else torch.tensor(latent_rgb_factors_bias)
        )

    def decode_latent_to_preview(self, x0):
        factors = self.latent_rgb_factors.to(dtype=x0.dtype, device=x0.device)
        bias = None if self.latent_rgb_factors_bias is None else self.latent_rgb_factors_bias.to(x0.dtype)
        x0 = x0[0, :, 0] if x0.ndim == 5 else x0[0]  # video [B, C, T, H, W]: first frame of the first item
        return preview_to_image(torch.nn.functional.linear(x0.movedim(0, -1), factors, bias=bias))


def get_previewer(device, latent_format):
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    if getattr(latent_format, "latent_rgb_factors", None) is None:
        return None
    return Latent2RGBPreviewer(
        latent_format.latent_rgb_factors, getattr(latent_format, "latent_rgb_factors_bias", None)
    )


def prepare_callback(model, steps, x0_output_dict=None):
    previewer = get_previewer(model.load_device, model.model.latent_format)
    pbar = comfy.utils.ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
        pbar.update_absolute(step + 1, total_steps, preview)

    return callback


def set_preview_method(override: str | None = None) -> None:
    """A prompt's own preview method (extra_data["preview_method"]); "default" or None restores --preview-method."""
    if override and override != "default":
        method = LatentPreviewMethod.from_string(override)
        if method is not None:
            args.preview_method = method
            return
    args.preview_method = default_preview_method
