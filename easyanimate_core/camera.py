"""Camera paths for the Control-Camera checkpoints: presets, combination, pose files, Plücker rays.

A camera path is a list of :class:`CameraPose`, one per frame, in the RealEstate10K convention that
CameraCtrl and EasyAnimate use: intrinsics ``fx fy cx cy`` as fractions of the original video's
width/height, and a 4x4 world-to-camera matrix in OpenCV axes (x right, y down, z forward).

The presets follow the official EasyAnimate ComfyUI nodes (``comfyui/utils.py``, itself taken from
chaojie/ComfyUI-CameraCtrl-Wrapper); the Plücker embedding follows CameraCtrl's ``ray_condition``
(hehao13/CameraCtrl ``inference.py``, copied into EasyAnimate's ``easyanimate/data/dataset_image_video.py``).
The code here is written from those descriptions, not copied.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("EasyAnimate")

# Intrinsics of the official control-camera workflow and the pose files shipped in EasyAnimate's asset/
# (square pixels at 1280x720: 0.532139961 * 1280 == 0.946026558 * 720).
DEFAULT_INTRINSICS = (0.532139961, 0.946026558, 0.5, 0.5)
# RealEstate10K poses describe 1280x720 videos (CameraCtrl's original_pose_width/height defaults).
POSE_SIZE = (1280, 720)

# Per unit speed, the motion reached after the whole clip (official CAMERA["base_T_norm"], ["base_angle"]).
BASE_TRANSLATION = 1.5
BASE_ANGLE = math.pi / 3

# Preset -> (rotation angles about x, y, z, world-to-camera translation) per unit speed, as the official
# CAMERA table. A w2c translation t puts the camera centre at -R^T t, so Pan Left (t = +x) moves the camera
# towards -x (left), Pan Up (t = +y) towards -y (up, y points down), Zoom In (t = -z) forward along +z.
# ACW/CW turn the w2c rotation about the optical axis by +/- the angle (opposite directions).
PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Static": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "Pan Up": ((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "Pan Down": ((0.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "Pan Left": ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
    "Pan Right": ((0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),
    "Zoom In": ((0.0, 0.0, 0.0), (0.0, 0.0, -2.0)),
    "Zoom Out": ((0.0, 0.0, 0.0), (0.0, 0.0, 2.0)),
    "ACW": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    "CW": ((0.0, 0.0, -1.0), (0.0, 0.0, 0.0)),
}

POSE_LINE_VALUES = 19  # timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3


@dataclass(frozen=True, eq=False)
class CameraPose:
    """One frame's camera: normalised intrinsics and a [4, 4] float64 world-to-camera matrix."""

    fx: float
    fy: float
    cx: float
    cy: float
    w2c: np.ndarray  # [4, 4]

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        return (self.fx, self.fy, self.cx, self.cy)


def _pose(intrinsics: tuple[float, float, float, float], w2c: np.ndarray) -> CameraPose:
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return CameraPose(fx, fy, cx, cy, np.asarray(w2c, dtype=np.float64).copy())


def rotation_from_angles(angles: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """[3] radians about x, y, z -> [3, 3] rotation Rz @ Ry @ Rx (the official compute_R_form_rad_angle order)."""
    ax, ay, az = (float(a) for a in angles)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def preset(
    name: str,
    speed: float = 1.0,
    frames: int = 49,
    intrinsics: tuple[float, float, float, float] = DEFAULT_INTRINSICS,
) -> list[CameraPose]:
    """A named camera motion over ``frames`` frames, as the official CameraBasic node builds it.

    Frame i has progressed ``i / frames`` of the way (so the last frame stops one step short of the full
    motion, as in the official get_camera_motion): angles ``(i/frames) * speed * pi/3 * angle`` and w2c
    translation ``(i/frames) * speed * 1.5 * T``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown camera preset {name!r}; choose one of {', '.join(PRESETS)}")
    if frames < 1:
        raise ValueError(f"a camera path needs at least one frame; got frames={frames}")
    angle, translation = (np.asarray(v, dtype=np.float64) for v in PRESETS[name])
    poses = []
    for i in range(frames):
        progress = i / frames * speed
        w2c = np.eye(4)
        w2c[:3, :3] = rotation_from_angles(progress * BASE_ANGLE * angle)
        w2c[:3, 3] = progress * BASE_TRANSLATION * translation
        poses.append(_pose(intrinsics, w2c))
    return poses


def combine(*paths: list[CameraPose]) -> list[CameraPose]:
    """Motions applied together, frame by frame: rotations composed in argument order, translations added.

    For the presets this is exactly the official CameraCombine node, which adds the presets' angles and
    translations before building each frame (the presets only rotate about z, so rotations commute).
    All paths need the same frame count; the intrinsics are the first path's.
    """
    if not paths:
        raise ValueError("combine needs at least one camera path")
    counts = [len(p) for p in paths]
    if len(set(counts)) != 1:
        raise ValueError(f"camera paths to combine need the same frame count; got {counts}")
    out = []
    for frame in zip(*paths):
        w2c = np.eye(4)
        for pose in frame:
            w2c[:3, :3] = w2c[:3, :3] @ pose.w2c[:3, :3]
            w2c[:3, 3] += pose.w2c[:3, 3]
        out.append(_pose(frame[0].intrinsics, w2c))
    return out


def chain(*paths: list[CameraPose]) -> list[CameraPose]:
    """Motions one after another, each path continuing from the previous path's last pose.

    Each following path is taken relative to its own first frame and composed after the last pose so far
    (``w2c = w2c_rel @ w2c_last``, the official CameraJoin's rule). Its first frame would repeat the last
    pose, so it is dropped: chaining two 25-frame presets gives 49 frames (the official node keeps the
    repeated pose).
    """
    if not paths or any(len(p) == 0 for p in paths):
        raise ValueError("chain needs one or more non-empty camera paths")
    out = [_pose(p.intrinsics, p.w2c) for p in paths[0]]
    for path in paths[1:]:
        last = out[-1].w2c
        first_inv = np.linalg.inv(path[0].w2c)
        for pose in path[1:]:
            out.append(_pose(pose.intrinsics, pose.w2c @ first_inv @ last))
    return out


def resample_poses(poses: list[CameraPose], frames: int) -> list[CameraPose]:
    """Linear resampling in time (first and last frames kept) of the intrinsics and w2c entries.

    The official training loader resamples pose files the same way: the raw parameters linearly
    interpolated over the clip (``F.interpolate(..., align_corners=True)`` in dataset_image_video.py).
    """
    if frames < 1 or not poses:
        raise ValueError(f"cannot resample {len(poses)} poses to {frames} frames")
    params = np.stack([np.concatenate([p.intrinsics, p.w2c[:3].reshape(-1)]) for p in poses])  # [N, 16]
    if len(poses) == 1 or frames == 1:
        sampled = params[[0] * frames]
    else:
        pos = np.linspace(0.0, len(poses) - 1, frames)
        lo = np.clip(np.floor(pos).astype(int), 0, len(poses) - 2)
        frac = (pos - lo)[:, None]
        sampled = params[lo] * (1 - frac) + params[lo + 1] * frac  # [frames, 16]
    out = []
    for row in sampled:
        w2c = np.eye(4)
        w2c[:3] = row[4:].reshape(3, 4)
        out.append(_pose(tuple(row[:4]), w2c))
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_pose_line(values: list[str]) -> CameraPose:
    """The tokens of one pose line -> its pose; ValueError says what is wrong (the caller adds the line number)."""
    if len(values) != POSE_LINE_VALUES:
        raise ValueError(
            f"a pose line has {POSE_LINE_VALUES} numbers (frame, fx, fy, cx, cy, 2 zeros, 12 of the 3x4 matrix); "
            f"this one has {len(values)}"
        )
    # Errors name positions, never the text: pose_path can name any readable file and errors reach the browser.
    bad = [i for i, v in enumerate(values, start=1) if not _is_number(v)]
    if bad:
        raise ValueError(f"value {bad[0]} is not a number")
    numbers = [float(v) for v in values]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError("all values must be finite numbers; this line has inf or nan")
    fx, fy = numbers[1:3]
    if fx <= 0 or fy <= 0:
        which = "values 2 and 3 are not" if fx <= 0 and fy <= 0 else f"value {2 if fx <= 0 else 3} is not"
        raise ValueError(
            f"focal lengths fx, fy (values 2 and 3) must be positive (normalised to the image size); {which}"
        )
    w2c = np.eye(4)
    w2c[:3] = np.asarray(numbers[7:]).reshape(3, 4)
    if abs(np.linalg.det(w2c)) < 1e-9:
        raise ValueError("its world-to-camera matrix is singular")
    return _pose(tuple(numbers[1:5]), w2c)


def parse_pose_file(text: str, frames: int | None = None, resample: bool = False, stride: int = 1) -> list[CameraPose]:
    """CameraCtrl / RealEstate10K pose text -> camera path.

    Each line: ``timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3`` (the 3x4
    world-to-camera matrix row by row). Blank lines and lines whose first word is not a number (the URL header
    line of RealEstate10K files, which the official reader drops) are skipped; any other line must be a valid
    pose, or ValueError names the line and what is wrong. ``stride`` keeps every stride-th pose from the first
    (RealEstate10K files are 24 fps; EasyAnimate's predict_v2v_control.py takes ``[::24 // fps]`` for its 8 fps
    videos, i.e. 3). With ``frames``: ``resample`` spreads the poses over ``frames`` frames (see
    :func:`resample_poses`); otherwise the first ``frames`` poses are used, as EasyAnimate's scripts and nodes
    do, and fewer poses than frames is a ValueError.
    """
    if stride < 1:
        raise ValueError(f"stride must be 1 or more (every stride-th pose is used), got {stride}")
    poses: list[CameraPose] = []
    skipped: list[int] = []  # line numbers only: the text of a file that is no pose file is never echoed
    for number, line in enumerate(text.splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        if not _is_number(values[0]):  # a header or URL line
            skipped.append(number)
            continue
        try:
            poses.append(_parse_pose_line(values))
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
    if not poses:
        if skipped:
            shown = ", ".join(str(n) for n in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            detail = f"no line starts with a number (skipped line{'s' if len(skipped) > 1 else ''} {shown})"
        else:
            detail = "the text is empty"
        raise ValueError(
            f"no camera pose found in the pose file: {detail}; each pose line is 'frame fx fy cx cy 0 0' then the "
            "3x4 world-to-camera matrix"
        )
    if skipped:
        log.debug("pose file: skipped %d header line(s): %s", len(skipped), ", ".join(map(str, skipped)))
    count = len(poses)
    poses = poses[::stride]
    if frames is not None and len(poses) != frames:
        if resample:
            return resample_poses(poses, frames)
        if len(poses) < frames:
            kept = f" ({len(poses)} with stride {stride})" if stride > 1 else ""
            raise ValueError(
                f"the pose file has {count} poses{kept} but {frames} frames are generated; enable resample to "
                "spread the poses over the frames" + (", or lower the stride" if stride > 1 else "")
            )
        log.info("pose file: using the first %d of its %d poses (stride %d)", frames, len(poses), stride)
        poses = poses[:frames]
    return poses


def format_pose_file(poses: list[CameraPose], header: str = "") -> str:
    """Camera path -> RealEstate10K text (timestamps are the frame indices), the inverse of parse_pose_file."""
    lines = [header]
    for i, p in enumerate(poses):
        values = [*p.intrinsics, 0.0, 0.0, *p.w2c[:3].reshape(-1)]
        lines.append(" ".join([str(i)] + [f"{v:.9f}" for v in values]))
    return "\n".join(lines) + "\n"


def pixel_intrinsics(
    pose: CameraPose, width: int, height: int, pose_size: tuple[int, int] = POSE_SIZE
) -> tuple[float, float, float, float]:
    """Normalised intrinsics -> (fx, fy, cx, cy) in pixels of the generation size.

    CameraCtrl's aspect rule: the poses were estimated on a ``pose_size`` video; a generation with another
    aspect ratio sees a centre crop of it resized to the generation size, so the focal length along the
    cropped axis grows: if the pose video is wider, fx *= height * pose_ratio / width, otherwise
    fy *= (width / pose_ratio) / height.
    """
    pose_ratio = pose_size[0] / pose_size[1]
    fx, fy = pose.fx, pose.fy
    if pose_ratio > width / height:
        fx = fx * (height * pose_ratio) / width
    else:
        fy = fy * (width / pose_ratio) / height
    return fx * width, fy * height, pose.cx * width, pose.cy * height


def relative_c2w(poses: list[CameraPose]) -> np.ndarray:
    """Camera-to-world matrices [T, 4, 4] relative to the first frame (the first is the identity).

    As CameraCtrl's get_relative_pose with zero_first_frame_scale: c2w_rel[i] = w2c[0] @ c2w[i].
    """
    first_w2c = poses[0].w2c
    rel = [np.eye(4)] + [first_w2c @ np.linalg.inv(p.w2c) for p in poses[1:]]
    return np.stack(rel)


def plucker_embedding(
    poses: list[CameraPose], width: int, height: int, pose_size: tuple[int, int] = POSE_SIZE
) -> torch.Tensor:
    """Camera path -> Plücker ray embedding [6, T, H, W] float32 at the generation size.

    Follows CameraCtrl's ray_condition (hehao13/CameraCtrl inference.py): a ray through each pixel centre
    (u + 0.5, v + 0.5) with camera-space direction ((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1), normalised,
    rotated into the first frame's camera space (poses relative to frame 0), origin the camera centre;
    channels (o x d, d). Computed in float64 frame by frame, returned as float32.
    """
    if not poses:
        raise ValueError("the camera path is empty")
    if width < 1 or height < 1:
        raise ValueError(f"invalid size {width}x{height}")
    c2ws = relative_c2w(poses)  # [T, 4, 4]
    v = torch.arange(height, dtype=torch.float64)[:, None] + 0.5  # [H, 1] pixel-centre rows
    u = torch.arange(width, dtype=torch.float64)[None, :] + 0.5  # [1, W] pixel-centre columns
    out = torch.empty(6, len(poses), height, width, dtype=torch.float32)
    camera_dirs: dict[tuple[float, ...], torch.Tensor] = {}  # most paths share one set of intrinsics
    for t, (pose, c2w) in enumerate(zip(poses, c2ws)):
        k = pixel_intrinsics(pose, width, height, pose_size)
        if k not in camera_dirs:
            fx, fy, cx, cy = k
            x, y = ((u - cx) / fx).expand(height, width), ((v - cy) / fy).expand(height, width)
            dirs = torch.stack([x, y, torch.ones_like(x)])  # [3, H, W] camera-space directions
            camera_dirs[k] = dirs / dirs.norm(dim=0, keepdim=True)
        dirs = camera_dirs[k]
        r, o = c2w[:3, :3], c2w[:3, 3]
        d = [r[i, 0] * dirs[0] + r[i, 1] * dirs[1] + r[i, 2] * dirs[2] for i in range(3)]  # R @ dir, 3 x [H, W]
        moment = [o[1] * d[2] - o[2] * d[1], o[2] * d[0] - o[0] * d[2], o[0] * d[1] - o[1] * d[0]]  # o x d
        for c, channel in enumerate(moment + d):
            out[c, t] = channel
    return out
