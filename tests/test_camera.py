"""Camera paths and the Plücker embedding, checked against formulas written out here in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from easyanimate_core import camera as C


def centre(pose: C.CameraPose) -> np.ndarray:
    """Camera centre in world coordinates: the point the w2c matrix sends to the origin."""
    return -pose.w2c[:3, :3].T @ pose.w2c[:3, 3]


def axis_angle(axis, angle: float) -> np.ndarray:
    """Rodrigues' formula, independent of the module's Euler-angle helper."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def w2c_from(rotation: np.ndarray, translation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def reference_plucker(poses, width, height, pixels, pose_size=(1280, 720)):
    """Direct float64 Plücker coordinates at a few (frame, row, col) pixels.

    Intrinsics: the pose video is centre-cropped to the generation aspect and scaled to the generation
    size, so both focal lengths scale by max(W / pose_w, H / pose_h) in pixels of the pose video.
    Ray through the pixel centre: d = R_rel K^-1 (u + 0.5, v + 0.5, 1), normalised; o = camera centre
    relative to the first camera; coordinates (o x d, d).
    """
    pw, ph = pose_size
    scale = max(width / pw, height / ph)
    first = poses[0].w2c
    out = {}
    for t, v, u in pixels:
        p = poses[t]
        k = np.array([[p.fx * pw * scale, 0, p.cx * width], [0, p.fy * ph * scale, p.cy * height], [0, 0, 1]])
        d_cam = np.linalg.inv(k) @ np.array([u + 0.5, v + 0.5, 1.0])
        d_cam /= np.linalg.norm(d_cam)
        rel = first @ np.linalg.inv(p.w2c)  # camera t -> first camera
        d = rel[:3, :3] @ d_cam
        o = rel[:3, 3]
        out[(t, v, u)] = np.concatenate([np.cross(o, d), d])
    return out


def random_path(frames: int, seed: int = 0) -> list[C.CameraPose]:
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(frames):
        rot = axis_angle(rng.normal(size=3), rng.uniform(-0.6, 0.6))
        fx, fy = rng.uniform(0.4, 0.7), rng.uniform(0.7, 1.1)
        cx, cy = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)
        poses.append(C.CameraPose(fx, fy, cx, cy, w2c_from(rot, rng.normal(size=3))))
    return poses


@pytest.mark.parametrize("width,height", [(40, 24), (48, 36), (64, 16)])  # wider, narrower, much wider than 16:9
def test_plucker_matches_direct_formula(width, height):
    poses = random_path(4, seed=width)
    emb = C.plucker_embedding(poses, width, height)
    assert emb.shape == (6, 4, height, width) and emb.dtype == torch.float32
    pixels = [(0, 0, 0), (1, 3, 7), (2, height - 1, width - 1), (3, height // 2, 5), (3, 1, width - 2)]
    for (t, v, u), expected in reference_plucker(poses, width, height, pixels).items():
        np.testing.assert_allclose(emb[:, t, v, u].double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_plucker_directions_are_unit_and_moments_orthogonal():
    emb = C.plucker_embedding(random_path(3, seed=7), 32, 16).double()
    moment, d = emb[:3], emb[3:]
    torch.testing.assert_close(d.norm(dim=0), torch.ones(3, 16, 32, dtype=torch.float64))
    assert (moment * d).sum(dim=0).abs().max() < 1e-5


def test_first_frame_equals_identity_pose_embedding():
    poses = random_path(3, seed=3)
    p0 = poses[0]
    identity = C.CameraPose(p0.fx, p0.fy, p0.cx, p0.cy, np.eye(4))
    emb = C.plucker_embedding(poses, 24, 16)
    torch.testing.assert_close(emb[:, 0], C.plucker_embedding([identity], 24, 16)[:, 0])
    assert emb[:3, 0].abs().max() == 0  # the first camera sits at the origin: zero moments


def test_embedding_ignores_the_world_frame():
    """Poses are taken relative to the first frame: moving the whole world changes nothing."""
    poses = random_path(3, seed=5)
    world = w2c_from(axis_angle([1, 2, 3], 0.7), [4.0, -1.0, 2.0])  # new world -> old world
    moved = [C.CameraPose(p.fx, p.fy, p.cx, p.cy, p.w2c @ world) for p in poses]
    torch.testing.assert_close(
        C.plucker_embedding(moved, 20, 12), C.plucker_embedding(poses, 20, 12), atol=1e-5, rtol=0
    )


def test_aspect_rule_keeps_intrinsics_at_the_pose_aspect():
    pose = C.CameraPose(0.5, 0.9, 0.5, 0.5, np.eye(4))
    assert C.pixel_intrinsics(pose, 1280, 720) == pytest.approx((640, 648, 640, 360))
    assert C.pixel_intrinsics(pose, 640, 360) == pytest.approx((320, 324, 320, 180))
    # 4:3 sees a centre crop 960 pixels wide of the 1280x720 video: fx grows by 1280/960
    assert C.pixel_intrinsics(pose, 960, 720) == pytest.approx((640, 648, 480, 360))


def test_static_is_identity():
    for pose in C.preset("Static", speed=3.0, frames=5):
        np.testing.assert_array_equal(pose.w2c, np.eye(4))
        assert pose.intrinsics == C.DEFAULT_INTRINSICS


@pytest.mark.parametrize(
    "name,direction",
    [
        ("Pan Left", [-1, 0, 0]),
        ("Pan Right", [1, 0, 0]),
        ("Pan Up", [0, -1, 0]),  # y points down in camera axes
        ("Pan Down", [0, 1, 0]),
        ("Zoom In", [0, 0, 2]),  # forward along the optical axis, twice the pan distance
        ("Zoom Out", [0, 0, -2]),
    ],
)
def test_translation_presets_move_the_camera_centre(name, direction):
    speed, frames = 2.0, 10
    poses = C.preset(name, speed=speed, frames=frames)
    assert len(poses) == frames
    for i, pose in enumerate(poses):
        np.testing.assert_array_equal(pose.w2c[:3, :3], np.eye(3))
        expected = np.asarray(direction, dtype=np.float64) * 1.5 * speed * i / frames
        np.testing.assert_allclose(centre(pose), expected, atol=1e-12)


def test_pan_left_matches_the_official_pose_file_step():
    # EasyAnimate's asset/Pan_Left.txt (49 frames) steps t1 by 0.030612245 per frame
    assert C.preset("Pan Left", 1.0, 49)[1].w2c[0, 3] == pytest.approx(0.030612245, abs=1e-9)


def test_roll_presets_rotate_about_the_optical_axis_in_opposite_directions():
    speed, frames = 1.5, 8
    acw, cw = C.preset("ACW", speed, frames), C.preset("CW", speed, frames)
    for i in range(frames):
        angle = math.pi / 3 * speed * i / frames
        np.testing.assert_allclose(acw[i].w2c[:3, :3], axis_angle([0, 0, 1], angle), atol=1e-12)
        np.testing.assert_allclose(cw[i].w2c[:3, :3], axis_angle([0, 0, 1], -angle), atol=1e-12)
        np.testing.assert_allclose(acw[i].w2c[:3, 3], 0)
        np.testing.assert_allclose(acw[i].w2c[:3, :3] @ [0, 0, 1], [0, 0, 1], atol=1e-12)  # optical axis kept


def test_unknown_preset():
    with pytest.raises(ValueError, match="Pan Left"):
        C.preset("Orbit", 1.0, 5)


def test_combine_adds_motions_per_frame():
    frames = 6
    both = C.combine(C.preset("Pan Left", 1.0, frames), C.preset("Zoom In", 0.5, frames))
    for i, pose in enumerate(both):
        np.testing.assert_allclose(centre(pose), [-1.5 * i / frames, 0, 1.5 * 0.5 * 2 * i / frames], atol=1e-12)
    for pose in C.combine(C.preset("ACW", 1.0, frames), C.preset("CW", 1.0, frames)):
        np.testing.assert_allclose(pose.w2c, np.eye(4), atol=1e-12)
    # the official CameraCombine: angles and translations summed, then R|T built per frame
    rolled = C.combine(C.preset("Pan Up", 1.0, frames), C.preset("ACW", 1.0, frames))
    for i, pose in enumerate(rolled):
        np.testing.assert_allclose(pose.w2c[:3, :3], axis_angle([0, 0, 1], math.pi / 3 * i / frames), atol=1e-12)
        np.testing.assert_allclose(pose.w2c[:3, 3], [0, 1.5 * i / frames, 0], atol=1e-12)
    with pytest.raises(ValueError, match=r"\[6, 5\]"):
        C.combine(C.preset("Pan Up", 1.0, 6), C.preset("Pan Up", 1.0, 5))


def test_chain_continues_from_the_last_pose():
    step = 1.5 / 5
    pans = C.chain(C.preset("Pan Left", 1.0, 5), C.preset("Pan Left", 1.0, 5))
    assert len(pans) == 9  # the second path's first pose repeats the last one and is dropped
    for i, pose in enumerate(pans):
        np.testing.assert_allclose(centre(pose), [-step * i, 0, 0], atol=1e-12)

    turn = C.chain(C.preset("Pan Left", 1.0, 5), C.preset("Pan Up", 1.0, 5))
    last = centre(turn[4])
    for k, pose in enumerate(turn[5:], start=1):
        np.testing.assert_allclose(centre(pose), last + [0, -step * k, 0], atol=1e-12)

    rolls = C.chain(C.preset("ACW", 1.0, 4), C.preset("ACW", 1.0, 4), C.preset("ACW", 1.0, 4))
    assert len(rolls) == 10
    for i, pose in enumerate(rolls):
        np.testing.assert_allclose(pose.w2c[:3, :3], axis_angle([0, 0, 1], math.pi / 3 * i / 4), atol=1e-12)


def test_chain_takes_later_paths_relative_to_their_first_pose():
    start = random_path(3, seed=11)
    offset = w2c_from(axis_angle([0, 1, 0], 0.3), [1.0, 2.0, 3.0])
    follow = [C.CameraPose(*p.intrinsics, p.w2c @ offset) for p in random_path(3, seed=12)]
    plain = random_path(3, seed=12)
    a, b = C.chain(start, follow), C.chain(start, plain)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa.w2c, pb.w2c, atol=1e-12)


POSE_TEXT = """https://www.youtube.com/watch?v=example
1000 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0
2000 0.5 0.9 0.5 0.5 0 0 1 0 0 0.2 0 1 0 0 0 0 1 0
3000 0.5 0.9 0.5 0.5 0 0 1 0 0 0.4 0 1 0 -0.1 0 0 1 0.6
"""


def test_parse_pose_file():
    poses = C.parse_pose_file(POSE_TEXT)
    assert len(poses) == 3
    assert poses[2].intrinsics == (0.5, 0.9, 0.5, 0.5)
    np.testing.assert_array_equal(poses[2].w2c[:3, 3], [0.4, -0.1, 0.6])
    np.testing.assert_array_equal(poses[1].w2c[3], [0, 0, 0, 1])
    assert len(C.parse_pose_file(POSE_TEXT, frames=3)) == 3


def test_pose_file_round_trip():
    path = C.chain(C.preset("Pan Left", 1.0, 5), C.preset("CW", 2.0, 5))
    back = C.parse_pose_file(C.format_pose_file(path, header="made by a test"))
    for a, b in zip(path, back):
        np.testing.assert_allclose(a.w2c, b.w2c, atol=1e-8)


def test_pose_file_frame_count_mismatch_and_resample():
    with pytest.raises(ValueError, match=r"3 poses but 5 frames"):
        C.parse_pose_file(POSE_TEXT, frames=5)
    first = C.parse_pose_file(POSE_TEXT, frames=2)  # more poses than frames: the first ones
    np.testing.assert_array_equal(first[1].w2c[:3, 3], [0.2, 0, 0])
    strided = C.parse_pose_file(POSE_TEXT, frames=2, stride=2)  # poses 1 and 3
    np.testing.assert_array_equal(strided[1].w2c[:3, 3], [0.4, -0.1, 0.6])
    with pytest.raises(ValueError, match=r"3 poses \(2 with stride 2\) but 3 frames"):
        C.parse_pose_file(POSE_TEXT, frames=3, stride=2)
    with pytest.raises(ValueError, match="stride must be 1 or more"):
        C.parse_pose_file(POSE_TEXT, stride=0)
    poses = C.parse_pose_file(POSE_TEXT, frames=5, resample=True)
    assert len(poses) == 5
    np.testing.assert_array_equal(poses[0].w2c, C.parse_pose_file(POSE_TEXT)[0].w2c)
    np.testing.assert_allclose(poses[-1].w2c[:3, 3], [0.4, -0.1, 0.6])
    np.testing.assert_allclose(poses[1].w2c[:3, 3], [0.1, 0, 0])  # halfway between the first two poses
    np.testing.assert_allclose(poses[3].w2c[:3, 3], [0.3, -0.05, 0.3])


def test_pose_file_without_valid_lines():
    with pytest.raises(ValueError, match=r"^line 2: a pose line has 19 numbers .*; this one has 18$"):
        C.parse_pose_file("header\n" + "0.5 " * 18 + "\n")
    with pytest.raises(ValueError, match=r"no camera pose found .*no line starts with a number \(skipped line 1\);"):
        C.parse_pose_file("a b c d e f g h i j k l m n o p q r s\n")
    with pytest.raises(ValueError, match="empty"):
        C.parse_pose_file("\n\n")


def test_pose_file_errors_never_echo_the_text():
    # pose_path can name any readable file and errors reach the browser: name line numbers and positions only.
    secret = "root:x:0:0:root:/root:/bin/bash\nSECRET_API_KEY=sk-live-1234567890abcdef\n"
    with pytest.raises(ValueError) as error:
        C.parse_pose_file(secret)
    message = str(error.value)
    assert "(skipped lines 1, 2);" in message
    assert "root" not in message and "SECRET" not in message and "sk-live" not in message
    many = "".join(f"header{i}\n" for i in range(7))
    with pytest.raises(ValueError, match=r"\(skipped lines 1, 2, 3, 4, 5, \.\.\.\);") as error:
        C.parse_pose_file(many)
    assert "header" not in str(error.value)
    tokens = "0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0".split()
    tokens[14] = "sk-live-1234"  # a pose line with a secret in place of a number
    with pytest.raises(ValueError, match=r"^line 2: value 15 is not a number$") as error:
        C.parse_pose_file("# header\n" + " ".join(tokens))
    assert "sk-live" not in str(error.value)
    with pytest.raises(ValueError) as error:  # a line of numbers with a bad focal length: no number echoed either
        C.parse_pose_file("0 -123456 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n")
    assert "123456" not in str(error.value) and "value 2 is not" in str(error.value)


def with_line(index: int, edit) -> str:
    """POSE_TEXT with its pose line ``index`` (0-based, after the header) replaced by ``edit(tokens)``."""
    lines = POSE_TEXT.splitlines()
    lines[index + 1] = " ".join(edit(lines[index + 1].split()))
    return "\n".join(lines)


def test_broken_pose_line_is_an_error_naming_the_line_not_skipped():
    # Only header lines (first word not a number, as the official reader's URL line) are skipped.
    with pytest.raises(ValueError, match=r"^line 3: a pose line has 19 numbers \(frame, fx, fy, cx, cy, 2 zeros, 12 "):
        C.parse_pose_file(with_line(1, lambda t: t[:17]))
    with pytest.raises(ValueError, match=r"^line 4: value 2 is not a number$"):
        C.parse_pose_file(with_line(2, lambda t: [t[0], "x" + t[1], *t[2:]]))
    assert len(C.parse_pose_file("# comment\n" + POSE_TEXT)) == 3


@pytest.mark.parametrize(
    ("fx", "fy", "message"),
    [
        (
            "0",
            "0",
            r"^line 2: focal lengths fx, fy \(values 2 and 3\) must be positive \(normalised to the image size\); "
            r"values 2 and 3 are not$",
        ),
        ("0.5", "-0.9", r"^line 2: focal lengths fx, fy \(values 2 and 3\) must be positive .*; value 3 is not$"),
        ("-1", "0.9", r"^line 2: focal lengths fx, fy \(values 2 and 3\) must be positive .*; value 2 is not$"),
        ("nan", "0.9", r"^line 2: all values must be finite numbers; this line has inf or nan$"),
        ("0.5", "inf", r"^line 2: all values must be finite"),
    ],
)
def test_pose_line_with_bad_focal_lengths_is_refused(fx, fy, message):
    with pytest.raises(ValueError, match=message):
        C.parse_pose_file(with_line(0, lambda t: [t[0], fx, fy, *t[3:]]))
