"""The pack's only door to ComfyUI: devices, interrupts, progress and previews, model and file folders.

Inside ComfyUI every function calls ComfyUI's own service (`comfy.model_management`, `comfy.utils`,
`folder_paths`, `latent_preview`, `server`). Without ComfyUI (tests, the CLI) plain equivalents are
used: importing this module installs nothing, downloads nothing and needs no GPU.

Fallback folders: models in `$EASYANIMATE_MODELS_DIR` or `<repo>/models`, outputs in
`$EASYANIMATE_OUTPUT_DIR` or `<repo>/output`, inputs in `$EASYANIMATE_INPUT_DIR` or `<repo>/input`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    import comfy.model_management as _mm
except ImportError:
    _mm = None
try:
    import comfy.utils as _comfy_utils
except ImportError:
    _comfy_utils = None
try:
    import folder_paths as _folder_paths
except ImportError:
    _folder_paths = None
try:
    import latent_preview as _latent_preview
except ImportError:
    _latent_preview = None
try:
    import server as _server
except ImportError:
    _server = None

log = logging.getLogger("EasyAnimate")

IN_COMFYUI = _mm is not None
CHECKPOINT_FOLDER = "EasyAnimate"  # whole checkpoints: models/EasyAnimate/<name>/
FILE_FOLDERS = ("diffusion_models", "vae", "text_encoders", "loras")  # single files
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}  # folder_paths'
PREVIEW_MAX_SIZE = 512  # ComfyUI's default --preview-size
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The fallback's only state, mirroring model_management's own interrupt flag.
_fallback_interrupt = threading.Event()


class EasyAnimateInterrupted(InterruptedError):
    """Raised by `throw_if_interrupted` when running without ComfyUI."""


# The exception `throw_if_interrupted` raises; ComfyUI's executor treats its own as a clean cancel.
INTERRUPT_EXCEPTION: type[BaseException] = _mm.InterruptProcessingException if _mm else EasyAnimateInterrupted


# --- devices and memory ---------------------------------------------------------------------------


def torch_device() -> torch.device:
    """The device to compute on (ComfyUI's choice, honouring --cpu, --directml, ...)."""
    if _mm is not None:
        return _mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


MODEL_PARAMS_HINT = 7 * 10**9  # the smallest official EasyAnimate transformer (V5/V5.1 7B)


def precision(choice: str, device: torch.device) -> str:
    """The loaders' precision: ``auto`` becomes ComfyUI's choice for ``device`` (``should_use_bf16`` /
    ``should_use_fp16``, which honour --force-fp32, --force-fp16 and the GPU's abilities); without ComfyUI, or for
    an explicit choice, it is returned as given (handles.pick_dtype then decides ``auto``). ComfyUI is told the
    model's size and that weights are cast at compute time, so a GPU without bf16 where fp32 weights would not fit
    (e.g. a 24 GB Pascal card) gets fp16, as the official scripts use, not fp32."""
    if choice != "auto" or _mm is None or not hasattr(_mm, "should_use_bf16"):
        return choice
    hint = dict(model_params=MODEL_PARAMS_HINT, manual_cast=True)
    if _mm.should_use_bf16(device, **hint):
        return "bf16"
    return "fp16" if _mm.should_use_fp16(device, **hint) else "fp32"


OFFLOAD_DEVICES = {  # ComfyUI's choice per kind of model
    "transformer": "unet_offload_device",  # the GPU itself with --gpu-only or --highvram
    "text_encoder": "text_encoder_offload_device",  # the GPU itself with --gpu-only
    "vae": "vae_offload_device",  # the GPU itself with --gpu-only
}


def offload_device(kind: str = "transformer") -> torch.device:
    """Where idle weights of ``kind`` (transformer, text_encoder, vae) wait: the CPU, unless ComfyUI keeps that
    kind on the GPU (--gpu-only; --highvram for the transformer only), as its own loaders do."""
    if _mm is None:
        return torch.device("cpu")
    return getattr(_mm, OFFLOAD_DEVICES[kind], _mm.unet_offload_device)()


def soft_empty_cache() -> None:
    """Give cached, unused accelerator memory back."""
    if _mm is not None:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_room(estimate: Callable[..., int], *args: Any, **kwargs: Any) -> torch.device:
    """Before work on the compute device that needs ``estimate(*args, **kwargs, device=device)`` more bytes there
    (one of easyanimate_core.memory's ``*_vram_bytes``): inside ComfyUI, ask its model manager to unload the
    models it keeps there (other nodes' checkpoints) until that much plus ComfyUI's reserve (``--reserve-vram``)
    is free, as its own loaders do (``load_models_gpu`` -> ``free_memory``; not for the CPU, as there); our models
    are not in its list, so this never unloads them. Returns the compute device."""
    device = torch_device()
    if _mm is not None and device.type != "cpu":
        reserve = _mm.extra_reserved_memory() if hasattr(_mm, "extra_reserved_memory") else 0
        _mm.free_memory(int(estimate(*args, **kwargs, device=device) + reserve), device)
    return device


# --- interruption ---------------------------------------------------------------------------------


def throw_if_interrupted() -> None:
    """Raise INTERRUPT_EXCEPTION if the user cancelled; clears the request, as ComfyUI's does."""
    if _mm is not None:
        _mm.throw_exception_if_processing_interrupted()
    elif _fallback_interrupt.is_set():
        _fallback_interrupt.clear()
        raise EasyAnimateInterrupted("EasyAnimate: processing interrupted")


def should_stop() -> bool:
    """True once the user has cancelled; never raises and leaves the request set, so the engine can
    stop at a clean point and the node then calls `throw_if_interrupted()`."""
    if _mm is not None:
        return bool(_mm.processing_interrupted())
    return _fallback_interrupt.is_set()


def request_interrupt(value: bool = True) -> None:
    """Ask running work to stop (ComfyUI's `interrupt_current_processing`; the CLI's Ctrl+C)."""
    if _mm is not None:
        _mm.interrupt_current_processing(value)
    elif value:
        _fallback_interrupt.set()
    else:
        _fallback_interrupt.clear()


# --- progress and previews ------------------------------------------------------------------------


class _PlainProgressBar:
    """comfy.utils.ProgressBar's interface without ComfyUI: logs, and honours interrupts like its hook."""

    def __init__(self, total: int):
        self.total, self.current = total, 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        log.debug("progress %d/%d", self.current, self.total)
        throw_if_interrupted()

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def progress_bar(total: int):
    """An object with `update_absolute(value, total=None, preview=None)` and `update(value)`; inside
    ComfyUI it is `comfy.utils.ProgressBar`, whose hook also raises on a pending interrupt (but ComfyUI throttles
    the hook: make_progress_callback checks for a Cancel on every update itself)."""
    return _comfy_utils.ProgressBar(total) if _comfy_utils is not None else _PlainProgressBar(total)


def _previews_enabled() -> bool:
    """Follows latent_preview.get_previewer: none unless ComfyUI runs with --preview-method other than none."""
    if _latent_preview is None or _server is None:
        return False
    method = getattr(getattr(_latent_preview, "args", None), "preview_method", None)
    return method is None or getattr(method, "value", method) != "none"


def _preview_max_size() -> int:
    return getattr(_latent_preview, "MAX_PREVIEW_RESOLUTION", PREVIEW_MAX_SIZE) or PREVIEW_MAX_SIZE


def _image_to_pil(image: torch.Tensor):
    """IMAGE [H, W, 3] in 0..1 -> PIL."""
    from PIL import Image

    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array)


def rgb_factor_decoder(factors: Sequence[Sequence[float]], bias: Sequence[float] | None = None) -> Callable:
    """latents [B, C, T, H, W] (or [B, C, H, W]) -> IMAGE [H, W, 3] 0..1 of the first frame, by a
    linear latent->RGB table of C rows of (R, G, B), as ComfyUI's Latent2RGBPreviewer does."""
    table = torch.tensor(factors, dtype=torch.float32)  # [C, 3]
    offset = None if bias is None else torch.tensor(bias, dtype=torch.float32)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        x0 = latents[0, :, 0] if latents.ndim == 5 else latents[0]  # [C, H, W]
        weight = table.to(x0.device).transpose(0, 1)  # [3, C]
        rgb = torch.nn.functional.linear(x0.float().movedim(0, -1), weight, offset)  # [H, W, 3] in -1..1
        return ((rgb + 1.0) / 2.0).clamp(0, 1)

    return decode


def _as_decoder(latent_format_or_decoder: Any) -> Callable | None:
    source = latent_format_or_decoder
    if source is None or callable(source):
        return source
    if hasattr(source, "latent_rgb_factors"):  # a ComfyUI-style LatentFormat
        return rgb_factor_decoder(source.latent_rgb_factors, getattr(source, "latent_rgb_factors_bias", None))
    return rgb_factor_decoder(source)


def make_progress_callback(total: int, latent_format_or_decoder: Any = None) -> Callable:
    """-> `progress(step, total, latents=None)` for the engine: `step` sampling steps are done.

    `latent_format_or_decoder` is a callable `latents -> IMAGE [H, W, 3] 0..1`, a latent->RGB factor
    table (C rows of R, G, B), an object with `latent_rgb_factors`, or None. When the host shows
    previews, each call sends ("JPEG", PIL image, max size) with the progress, as latent_preview's
    callback does; otherwise the latents are not decoded at all."""
    bar = progress_bar(total)
    decode = _as_decoder(latent_format_or_decoder) if _previews_enabled() else None

    def progress(step: int, total_steps: int | None = None, latents: torch.Tensor | None = None) -> None:
        throw_if_interrupted()  # ComfyUI's bar checks only in its hook, which it throttles (0.1 s, 0.5 %)
        preview = None
        if decode is not None and latents is not None:
            with torch.inference_mode():
                preview = ("JPEG", _image_to_pil(decode(latents)), _preview_max_size())
        bar.update_absolute(step, total_steps, preview)

    return progress


# --- folders --------------------------------------------------------------------------------------


def _fallback_models_root() -> str:
    return os.environ.get("EASYANIMATE_MODELS_DIR") or os.path.join(REPO_DIR, "models")


def _fallback_paths(folder_name: str) -> list[str]:
    """Without ComfyUI the folders are fixed: `<models root>/<name>` for ours and the single-file ones."""
    if folder_name in (CHECKPOINT_FOLDER, *FILE_FOLDERS):
        return [os.path.join(_fallback_models_root(), folder_name)]
    return []


def register_model_folders() -> None:
    """Register `models/EasyAnimate` with folder_paths.add_model_folder_path (which keeps any path a
    user added in extra_model_paths.yaml, and adds a path only once). Without ComfyUI there is nothing
    to register: `EasyAnimate` and the single-file folders always resolve under the models root.
    Creates no directories."""
    if _folder_paths is not None:
        _folder_paths.add_model_folder_path(
            CHECKPOINT_FOLDER, os.path.join(_folder_paths.models_dir, CHECKPOINT_FOLDER)
        )


def folder_paths_for(folder_name: str) -> list[str]:
    """Every directory registered for `folder_name` (empty when unknown)."""
    if _folder_paths is not None:
        try:
            return _folder_paths.get_folder_paths(folder_name)
        except KeyError:
            return []
    return _fallback_paths(folder_name)


def list_models(folder_name: str) -> list[str]:
    """Files under the folder's directories, relative and sorted (ComfyUI: get_filename_list)."""
    if _folder_paths is not None:
        try:
            return list(_folder_paths.get_filename_list(folder_name))
        except KeyError:
            return []
    names = set()
    for root in _fallback_paths(folder_name):
        for directory, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if folder_name == CHECKPOINT_FOLDER or os.path.splitext(name)[1].lower() in MODEL_EXTENSIONS:
                    names.add(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(names)


def list_checkpoint_folders() -> list[str]:
    """Names of the sub-folders of every `EasyAnimate` directory (whole checkpoints), sorted."""
    names = set()
    for root in folder_paths_for(CHECKPOINT_FOLDER):
        if os.path.isdir(root):
            names.update(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    return sorted(names)


def model_path(folder_name: str, name: str, folder: bool = False) -> str:
    """The full path of a file (or with `folder`, a checkpoint folder) `name` in `folder_name`; FileNotFoundError
    lists where it looked. ComfyUI's get_full_path finds files only (and warns about a linked folder), so
    folders are searched here."""
    if _folder_paths is not None and not folder:
        found = _folder_paths.get_full_path(folder_name, name)
        if found is not None:
            return found
    relative = os.path.relpath(os.path.join("/", name), "/")  # no escaping the folder with "../"
    searched = folder_paths_for(folder_name)
    for root in searched:
        candidate = os.path.join(root, relative)
        if os.path.exists(candidate):
            return candidate
    where = "\n  ".join(searched) if searched else f"(no folder is registered as {folder_name!r})"
    raise FileNotFoundError(f"EasyAnimate: {name!r} not found in {folder_name!r}; looked in:\n  {where}")


def output_directory() -> str:
    if _folder_paths is not None:
        return _folder_paths.get_output_directory()
    return os.environ.get("EASYANIMATE_OUTPUT_DIR") or os.path.join(REPO_DIR, "output")


def input_directory() -> str:
    if _folder_paths is not None:
        return _folder_paths.get_input_directory()
    return os.environ.get("EASYANIMATE_INPUT_DIR") or os.path.join(REPO_DIR, "input")


def annotated_input_path(name: str) -> str:
    """A LoadImage-style name ("clip.mp4", "x.png [output]", "y.png [input]", "z.png [temp]") -> full path.
    A name that leaves its folder ("../x.png") is a ValueError, as in folder_paths.get_annotated_filepath of
    current ComfyUI (which the fallback follows)."""
    if _folder_paths is not None:
        return _folder_paths.get_annotated_filepath(name)
    base, relative = input_directory(), name
    for suffix, directory in (
        (" [output]", output_directory),
        (" [input]", input_directory),
        (" [temp]", temp_directory),
    ):
        if name.endswith(suffix):
            base, relative = directory(), name[: -len(suffix)]
            break
    path = os.path.abspath(os.path.join(base, relative))
    if os.path.commonpath((os.path.realpath(base), os.path.realpath(path))) != os.path.realpath(base):
        raise ValueError(f"Invalid file path: {relative!r}")
    return path


def temp_directory() -> str:
    if _folder_paths is not None:
        return _folder_paths.get_temp_directory()
    return os.environ.get("EASYANIMATE_TEMP_DIR") or os.path.join(REPO_DIR, "temp")


def save_temp_png(image: torch.Tensor, prefix: str, max_size: int = 1024) -> dict[str, str]:
    """IMAGE frame [H, W, 3] 0..1 -> a PNG in the temp folder, at most ``max_size`` pixels on its long side, as the
    ``{"filename", "subfolder", "type": "temp"}`` reference that ComfyUI's ``/view`` serves (PreviewImage's way:
    the browser fetches the file instead of the history holding the picture). Named by content, so a rerun
    with the same image writes nothing new."""
    import hashlib
    import io

    from PIL import Image

    picture = _image_to_pil(image)
    if max(picture.size) > max_size:
        picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=4)
    data = buffer.getvalue()
    name = f"{prefix}_{hashlib.sha256(data).hexdigest()[:16]}.png"
    folder = temp_directory()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
    return {"filename": name, "subfolder": "", "type": "temp"}
