"""Point trajectories -> the Gaussian heat-map control video of the EasyAnimate V5.1 Control models.

A track is one point per frame. :func:`parse_tracks` reads them from the JSON that KJNodes' spline
editor (and this pack's trajectory editor) writes, in pixels of a reference size, and returns them as
fractions of the frame (x / width, y / height), so they scale to any generation size.

The heat-map follows the official ``CreateTrajectoryBasedOnKJNodes`` node and ``gen_gaussian_heatmap``
(aigc-apps/EasyAnimate ``comfyui/comfyui_nodes.py``): a Gaussian spot per point whose radius is
``int(50 * sqrt(H * W / (1280 * 720)))`` pixels, with sigma = 0.4 * radius (sigma 40 on a 200-pixel patch
that is resized to 2 * radius), cut off at the radius, peak 1, the same value in the three channels,
tracks combined by maximum. It is computed analytically here, at the generation size.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .frames import cover_crop

Track = list[tuple[float, float]]  # per frame (x / width, y / height)

SPOT_BASE_RADIUS = 50  # pixels at 1280x720
SPOT_BASE_AREA = 1280 * 720
SPOT_SIGMA = 0.4  # sigma as a fraction of the radius
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _loads(text: str) -> Any:
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            try:  # Python-style quotes, which the official node also accepts
                return json.loads(text.replace("'", '"'))
            except json.JSONDecodeError as e:
                raise ValueError(f"tracks are not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(
            "the tracks JSON is malformed: its lists are nested far too deeply; it should be a list of tracks, each "
            'a list of {"x": .., "y": ..} points'
        ) from None


def _decode(value: Any) -> Any:
    for _ in range(4):  # KJNodes output can arrive double-encoded: a JSON string inside a string
        if not isinstance(value, str):
            return value
        value = _loads(value)
    raise ValueError("tracks JSON is encoded too many times")


def _is_point(value: Any) -> bool:
    if isinstance(value, dict):
        return "x" in value and "y" in value
    return isinstance(value, list | tuple) and len(value) == 2 and not isinstance(value[0], list | tuple | dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_tracks(json_text: str, ref_width: int, ref_height: int) -> list[Track]:
    """Tracks JSON in pixels of ``ref_width`` x ``ref_height`` -> tracks in fractions of the frame.

    Accepts a list of tracks, each a list of ``{"x": .., "y": ..}`` (or ``[x, y]``) per frame; a single
    track not wrapped in a list; a JSON string inside the string; a list of JSON strings, one per track.
    Points must lie in the frame (0 <= x <= ref_width, 0 <= y <= ref_height).
    """
    if ref_width < 1 or ref_height < 1:
        raise ValueError(f"invalid reference size {ref_width}x{ref_height}")
    data = _decode(json_text)
    if isinstance(data, list) and data and all(isinstance(t, str) for t in data):
        data = [_decode(t) for t in data]
    if isinstance(data, dict) or (isinstance(data, list) and data and _is_point(data[0])):
        data = [data] if isinstance(data, list) else [[data]]
    if not isinstance(data, list) or not data:
        raise ValueError("no trajectory: the tracks JSON holds no track (draw at least one)")
    tracks = []
    for ti, raw in enumerate(data, start=1):
        where = f"track {ti} of {len(data)}"
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"{where} is not a non-empty list of points")
        track = []
        for fi, point in enumerate(raw, start=1):
            here = f"{where}, frame {fi} of {len(raw)}"
            if not _is_point(point):
                raise ValueError(f"{here}: expected {{'x': .., 'y': ..}}, got {point!r}")
            x, y = (point["x"], point["y"]) if isinstance(point, dict) else point
            x, y = _number(x), _number(y)
            if x is None or y is None:
                raise ValueError(f"{here}: coordinates must be finite numbers, got {point!r}")
            if not (0 <= x <= ref_width and 0 <= y <= ref_height):
                raise ValueError(
                    f"{here}: point (x={x:g}, y={y:g}) is outside the {ref_width}x{ref_height} reference frame"
                )
            track.append((x / ref_width, y / ref_height))
        tracks.append(track)
    return tracks


def fit_tracks(tracks: list[Track], ref_width: int, ref_height: int, width: int, height: int) -> list[Track]:
    """Tracks in fractions of the ref_width x ref_height frame -> fractions of the width x height generation frame,
    through the cover + centre-crop that every image takes to the generation size (``frames.fit_image``, e.g. the
    reference image as Control Video's ref_image), so a point stays on the same image content when the two
    aspect ratios differ. Points in the cropped-off margins land outside 0..1: their spots are cut off or not
    drawn."""
    nh, nw, top, left = cover_crop(ref_height, ref_width, height, width)
    return [[((x * nw - left) / width, (y * nh - top) / height) for x, y in track] for track in tracks]


def resample_track(track: Track, frames: int) -> Track:
    """Linear interpolation of a track's points to ``frames`` points (first and last kept)."""
    if frames < 1 or not track:
        raise ValueError(f"cannot resample a track of {len(track)} points to {frames} frames")
    pts = np.asarray(track, dtype=np.float64)  # [N, 2]
    if len(pts) == 1 or frames == 1:
        return [tuple(map(float, pts[0]))] * frames
    pos = np.linspace(0.0, len(pts) - 1, frames)
    lo = np.clip(np.floor(pos).astype(int), 0, len(pts) - 2)
    frac = (pos - lo)[:, None]
    out = pts[lo] * (1 - frac) + pts[lo + 1] * frac  # [frames, 2]
    return [(float(x), float(y)) for x, y in out]


def _fit_frames(tracks: list[Track], frames: int, resample: bool) -> list[Track]:
    if not tracks:
        raise ValueError("no trajectory to draw")
    fitted = []
    for i, track in enumerate(tracks, start=1):
        if len(track) != frames:
            if not resample:
                raise ValueError(
                    f"track {i} has {len(track)} points but {frames} frames are generated; "
                    "enable resample or draw the track with as many points as frames"
                )
            track = resample_track(track, frames)
        fitted.append(track)
    return fitted


def spot_radius(width: int, height: int) -> int:
    """Heat-map spot radius in pixels: the official int(50 * sqrt(H * W / (1280 * 720))), at least 1."""
    return max(1, int(SPOT_BASE_RADIUS * math.sqrt(width * height / SPOT_BASE_AREA)))


def tracks_to_video(tracks: list[Track], width: int, height: int, frames: int, resample: bool = False) -> torch.Tensor:
    """Tracks -> control video [T, H, W, 3] float32 in 0..1: a Gaussian spot per point, max over tracks.

    A point (x, y) lands on pixel column x * width, row y * height; the value at distance d from it is
    exp(-d^2 / (2 * sigma^2)) for d <= radius and 0 beyond (radius from :func:`spot_radius`,
    sigma = 0.4 * radius).
    """
    tracks = _fit_frames(tracks, frames, resample)
    radius = spot_radius(width, height)
    sigma = SPOT_SIGMA * radius
    video = torch.zeros(frames, height, width, dtype=torch.float64)
    for track in tracks:
        for t, (xn, yn) in enumerate(track):
            x, y = xn * width, yn * height
            x0, x1 = max(0, math.floor(x - radius)), min(width - 1, math.ceil(x + radius))
            y0, y1 = max(0, math.floor(y - radius)), min(height - 1, math.ceil(y + radius))
            if x0 > x1 or y0 > y1:
                continue
            cols = torch.arange(x0, x1 + 1, dtype=torch.float64) - x
            rows = torch.arange(y0, y1 + 1, dtype=torch.float64) - y
            d2 = rows[:, None] ** 2 + cols[None, :] ** 2  # [h, w] squared distance to the point
            spot = torch.exp(-d2 / (2 * sigma**2)) * (d2 <= radius**2)
            window = video[t, y0 : y1 + 1, x0 : x1 + 1]
            torch.maximum(window, spot, out=window)
    return video.float()[..., None].expand(frames, height, width, 3).contiguous()  # [T, H, W] -> [T, H, W, 3]


def draw_tracks_preview(image: torch.Tensor | None, tracks: list[Track], width: int, height: int) -> torch.Tensor:
    """The tracks as coloured polylines (a dot at each start) over ``image`` [H, W, 3] 0..1 or grey.

    Returns [height, width, 3] float32 in 0..1; an image of another size is resized first.
    """
    if image is None:
        canvas = Image.new("RGB", (width, height), (128, 128, 128))
    else:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"preview image must be [H, W, 3], got {tuple(image.shape)}")
        array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        canvas = Image.fromarray(array, "RGB")
        if canvas.size != (width, height):
            canvas = canvas.resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(width, height) / 128))
    for i, track in enumerate(tracks):
        colour = COLOURS[i % len(COLOURS)]
        pts = [(x * width, y * height) for x, y in track]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=line, joint="curve")
        (sx, sy), r = pts[0], 2 * line
        draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=colour, outline=(255, 255, 255))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
