"""Image and video files for the command line: read inputs as tensors, write generated frames.

Inputs come back as the engine's :class:`~easyanimate_core.pipeline.Request` wants them: images
[3, H, W] and videos [3, T, H, W], float32 in 0..1. Outputs take frames [T, H, W, 3] in 0..1.
Every unreadable or unsupported file is a ValueError (or FileNotFoundError) naming it.
"""

from __future__ import annotations

import os
import re
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageSequence, UnidentifiedImageError

FPS = 8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ANIMATED_SUFFIXES = (".gif", ".webp")  # read frame by frame with PIL
FFMPEG_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
OUTPUT_SUFFIXES = (".mp4", ".webp", ".gif", ".npy")


def _exists(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, C] uint8 or float 0..1 -> [3, T, H, W] float32 0..1 (grey and alpha handled)."""
    x = np.asarray(frames)
    if x.ndim == 3:  # [T, H, W] grey
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected frames [T, H, W, 3], got shape {x.shape}")
    x = x[..., :3] if x.shape[-1] != 1 else np.repeat(x, 3, axis=-1)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)).clamp(0, 1).permute(3, 0, 1, 2)  # [T,H,W,3] -> [3,T,H,W]


def _checked_npy(x: np.ndarray, path: Path) -> np.ndarray:
    """A ``.npy`` video [T, H, W, 3] (or [T, H, W, 1|4], [T, H, W]), refusing what would be misread silently."""
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        raise ValueError(
            f"{path} holds one image {list(x.shape)}, not a video [T, H, W, 3]: save it with a frame axis "
            "(array[None]), or pass it as an image"
        )
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{path} holds {x.dtype} values: save uint8 0..255 or float 0..1 frames")
        low, high = float(np.min(x)), float(np.max(x))  # also NaN, which min/max return
        if not 0 <= low <= high <= 1:
            raise ValueError(
                f"{path} holds float values from {low:g} to {high:g}; float frames must be in 0..1 "
                "(divide 0..255 frames by 255, or save them as uint8)"
            )
    return x


def read_image(path: str | Path) -> torch.Tensor:
    """An image file -> [3, H, W] float32 in 0..1 (the first frame of an animated file)."""
    path = _exists(Path(path), "image")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return _to_tensor(rgb[None])[:, 0]


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:  # closed at once: a long frame folder would otherwise hold a file per frame
        return np.asarray(im.convert("RGB"))


def _natural_key(path: Path) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", path.name)]


def read_video(path: str | Path, max_frames: int | None = None) -> torch.Tensor:
    """A video -> [3, T, H, W] float32 in 0..1, reading at most ``max_frames`` frames.

    ``path`` is a video file (mp4/mov/avi/mkv/webm via ffmpeg, animated gif/webp via PIL), a folder of
    image files (sorted by name, numbers compared as numbers), or a ``.npy`` array [T, H, W, 3] in 0..1.
    """
    path = _exists(Path(path), "video")
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
            if not files:
                raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the frame folder {path}")
            frames = [_read_rgb(f) for f in files[:max_frames]]
            sizes = {f.shape for f in frames}
            if len(sizes) > 1:
                raise ValueError(f"the frames in {path} have different sizes: {sorted(sizes)}")
            return _to_tensor(np.stack(frames))
        if suffix == ".npy":
            return _to_tensor(_checked_npy(np.load(path, mmap_mode="r", allow_pickle=False)[:max_frames], path))
        if suffix in ANIMATED_SUFFIXES:
            with Image.open(path) as im:
                frames = [np.asarray(f.convert("RGB")) for f in islice(ImageSequence.Iterator(im), max_frames)]
            return _to_tensor(np.stack(frames))
        if suffix in FFMPEG_SUFFIXES:
            import imageio.v2 as imageio

            with imageio.get_reader(str(path), format="FFMPEG") as reader:
                frames = [np.asarray(f) for f in islice(reader, max_frames)]
            if not frames:
                raise ValueError(f"the video {path} has no frames")
            return _to_tensor(np.stack(frames))
    except (UnidentifiedImageError, OSError, RuntimeError) as e:
        raise ValueError(f"cannot read video {path}: {e}") from e
    supported = ", ".join(FFMPEG_SUFFIXES + ANIMATED_SUFFIXES + (".npy",))
    raise ValueError(f"unsupported video file {path}: use {supported} or a folder of frames")


def check_output(path: str | Path) -> Path:
    """The output path if its suffix is one :func:`write_video` writes, else a ValueError."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {path} must end with one of {', '.join(OUTPUT_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"output {path} is a folder: name a file in it")
    for parent in path.parents:  # a file where a folder of the path should be: the write would fail at the end
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"output {path}: {parent} is a file, not a folder")
            break
    return path


def write_video(frames: torch.Tensor, path: str | Path, fps: int = FPS) -> Path:
    """Frames [T, H, W, 3] in 0..1 -> ``.mp4`` (H.264), ``.webp``/``.gif`` (animated, looping) or ``.npy``
    (float32 [T, H, W, 3] in 0..1). Missing parent folders are created.

    Written to a hidden temporary file beside ``path`` and moved over it only when complete: an error or a
    Ctrl+C mid-write leaves any earlier file at ``path`` as it was. ffmpeg does not report its own failures
    (a full disk, no permission) to the writer, so an ``.mp4`` that came out empty is an OSError."""
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = frames.detach().float().clamp(0, 1).cpu().numpy()
    suffix = path.suffix.lower()
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        _write(x, partial, suffix, fps)
        if not partial.is_file() or partial.stat().st_size == 0:
            raise OSError(f"could not write {path}: the {suffix} writer produced no file (disk full, no permission?)")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _write(x: np.ndarray, path: Path, suffix: str, fps: int) -> None:
    if suffix == ".npy":
        with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a name that lacks it
            np.save(f, x.astype(np.float32))
        return
    pixels = (x * 255 + 0.5).astype(np.uint8)  # [T, H, W, 3]
    if suffix == ".mp4":
        import imageio.v2 as imageio

        # macro_block_size=2: H.264 with yuv420p needs even sizes only; never rescale the frames.
        with imageio.get_writer(
            str(path), format="FFMPEG", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=2
        ) as writer:
            for frame in pixels:
                writer.append_data(frame)
        return
    images = [Image.fromarray(f) for f in pixels]
    extra = {"quality": 90} if suffix == ".webp" else {"disposal": 1}
    images[0].save(
        path, format=suffix[1:].upper(), save_all=True, append_images=images[1:], duration=round(1000 / fps),
        loop=0, **extra,
    )  # fmt: skip


def demo_picture(width: int, height: int, phase: float = 0.0) -> Image.Image:
    """A procedural test picture: sky gradient, sun, hills and a red box whose place follows ``phase`` (0..1)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 230], np.float32) + y * np.array([250, 200, 150], np.float32)
    im = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    r = height // 6
    sx, sy = int(width * (0.75 - 0.2 * phase)), int(height * (0.25 + 0.1 * phase))
    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 230, 90))
    hill = [(0, height)] + [(x, int(height * (0.7 + 0.08 * np.sin(x / width * 6.3)))) for x in range(0, width + 1, 4)]
    draw.polygon(hill + [(width, height)], fill=(60, 150, 70))
    bw, bh = width // 8, height // 6
    bx, by = int((width - bw) * (0.15 + 0.7 * phase)), int(height * 0.62) - bh
    draw.rectangle((bx, by, bx + bw, by + bh), fill=(200, 40, 40), outline=(40, 20, 20), width=2)
    return im
