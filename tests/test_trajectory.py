"""Point tracks -> Gaussian heat-map control video, and the track preview."""

from __future__ import annotations

import json
import math

import pytest
import torch

from easyanimate_core import trajectory as T


def track_json(*tracks) -> str:
    return json.dumps([[{"x": x, "y": y} for x, y in t] for t in tracks])


def gaussian(distance: float, radius: int) -> float:
    sigma = 0.4 * radius
    return math.exp(-(distance**2) / (2 * sigma**2)) if distance <= radius else 0.0


def test_spot_radius_follows_the_official_rule():
    assert T.spot_radius(1280, 720) == 50
    assert T.spot_radius(640, 360) == 25
    assert T.spot_radius(512, 512) == int(50 * math.sqrt(512 * 512 / (1280 * 720)))  # 26
    assert T.spot_radius(8, 8) == 1  # never vanishes


def test_heatmap_peak_and_gaussian_profile():
    w, h = 320, 240
    radius = T.spot_radius(w, h)
    assert radius == 14
    video = T.tracks_to_video(T.parse_tracks(track_json([(100, 80)]), w, h), w, h, frames=1)
    assert video.shape == (1, h, w, 3) and video.dtype == torch.float32
    assert video[0, 80, 100].tolist() == [1.0, 1.0, 1.0]
    assert video.max() == 1.0
    assert torch.equal(video[..., 0], video[..., 1]) and torch.equal(video[..., 0], video[..., 2])
    frame = video[0, :, :, 0]
    assert frame[80 + 4, 100 + 3].item() == pytest.approx(gaussian(5, radius), rel=1e-6)  # distance 5
    assert frame[80, 100 - 10].item() == pytest.approx(gaussian(10, radius), rel=1e-6)
    assert frame[80 + 14, 100].item() == pytest.approx(gaussian(14, radius), rel=1e-6)  # on the rim
    assert frame[80 + 15, 100].item() == 0.0  # beyond the radius
    assert frame[80 + 10, 100 + 11].item() == 0.0  # distance 14.87
    assert frame[:40].abs().sum() == 0  # far away


def test_tracks_combine_by_maximum():
    w, h = 320, 240
    radius = T.spot_radius(w, h)
    tracks = T.parse_tracks(track_json([(100, 80)], [(106, 80)]), w, h)
    frame = T.tracks_to_video(tracks, w, h, frames=1)[0, :, :, 0]
    assert frame[80, 103].item() == pytest.approx(gaussian(3, radius), rel=1e-6)  # not twice that
    assert frame[80, 100].item() == 1.0 and frame[80, 106].item() == 1.0


def test_points_scale_from_the_reference_size():
    tracks = T.parse_tracks(track_json([(40, 30), (10, 100)]), 160, 120)
    assert tracks == [[(0.25, 0.25), (0.0625, 100 / 120)]]
    video = T.tracks_to_video(tracks, 320, 240, frames=2)
    assert video[0, 60, 80, 0].item() == 1.0
    peak = divmod(int(video[1, :, :, 0].argmax()), 320)
    assert peak == (200, 20)


@pytest.mark.parametrize("ref", [(100, 100), (60, 120), (200, 90)])  # square, portrait, wider than the video
def test_tracks_stay_on_the_reference_image_content_when_the_aspect_differs(ref):
    """A point on an image feature lands where fit_image (what Control Video does to its ref_image) puts it."""
    from easyanimate_core.frames import fit_image

    rw, rh = ref
    w, h = 96, 64
    x, y = rw * 0.55, rh * 0.35  # the feature, in reference pixels
    image = torch.zeros(3, rh, rw)
    image[:, int(y) - 1 : int(y) + 1, int(x) - 1 : int(x) + 1] = 1  # a 2x2 dot centred on (x, y)
    seen = fit_image(image, w, h)[0]  # [h, w] in -1..1, as the model sees the reference image
    weight = (seen + 1) / 2  # 0 on the black background
    rows, cols = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")  # pixel centres
    dot = ((weight * cols).sum().item() / weight.sum().item(), (weight * rows).sum().item() / weight.sum().item())
    tracks = T.fit_tracks(T.parse_tracks(track_json([(x, y)]), rw, rh), rw, rh, w, h)
    ((px, py),) = tracks[0]
    assert (px * w, py * h) == pytest.approx(dot, abs=0.75)
    frame = T.tracks_to_video(tracks, w, h, frames=1)[0, :, :, 0]
    peak_y, peak_x = divmod(int(frame.argmax()), w)
    assert abs(peak_x + 0.5 - dot[0]) <= 1 and abs(peak_y + 0.5 - dot[1]) <= 1
    if rw / rh != w / h:  # stretching instead of cropping would put it elsewhere
        assert abs(0.55 * w - dot[0]) > 2 or abs(0.35 * h - dot[1]) > 2


def test_fit_tracks_is_the_identity_for_the_same_aspect():
    tracks = [[(0.25, 0.5), (1.0, 0.0)]]
    assert T.fit_tracks(tracks, 64, 48, 64, 48) == tracks
    assert T.fit_tracks(tracks, 128, 96, 64, 48) == tracks
    assert T.fit_tracks(tracks, 64, 64, 64, 32) == [[(0.25, 0.5), (1.0, -0.5)]]  # top and bottom quarters cut


def test_frames_follow_the_track():
    tracks = T.parse_tracks(track_json([(10, 10), (50, 10), (50, 40)]), 64, 48)
    video = T.tracks_to_video(tracks, 64, 48, frames=3)
    for t, (x, y) in enumerate([(10, 10), (50, 10), (50, 40)]):
        assert video[t, y, x, 0].item() == 1.0


def test_points_outside_the_frame_are_named():
    text = track_json([(1, 1), (5, 5)], [(1, 1), (500, 2)])
    with pytest.raises(ValueError) as err:
        T.parse_tracks(text, 100, 80)
    message = str(err.value)
    assert "track 2" in message and "frame 2" in message and "500" in message and "100x80" in message
    assert T.parse_tracks(track_json([(100, 80), (0, 0)]), 100, 80)  # the edges are inside
    with pytest.raises(ValueError, match="track 1 of 1, frame 1"):
        T.parse_tracks(track_json([(-0.5, 3)]), 100, 80)


def test_kjnodes_formats():
    expected = [[(0.1, 0.2), (0.3, 0.4)]]
    single = json.dumps([{"x": 10, "y": 20}, {"x": 30, "y": 40}])
    assert T.parse_tracks(single, 100, 100) == expected  # one track, not wrapped
    assert T.parse_tracks(json.dumps(single), 100, 100) == expected  # JSON string inside the string
    assert T.parse_tracks(single.replace('"', "'"), 100, 100) == expected  # Python quotes
    listed = json.dumps([single, json.dumps([{"x": 50, "y": 50}])])  # a list of JSON strings
    assert T.parse_tracks(listed, 100, 100) == [expected[0], [(0.5, 0.5)]]
    assert T.parse_tracks("[[[10, 20], [30, 40]]]", 100, 100) == expected  # [x, y] pairs


def test_bad_json_and_empty():
    with pytest.raises(ValueError, match="not valid JSON"):
        T.parse_tracks("[{x: 1", 10, 10)
    with pytest.raises(ValueError, match="no track"):
        T.parse_tracks("[]", 10, 10)
    with pytest.raises(ValueError, match="finite numbers"):
        T.parse_tracks('[{"x": "a", "y": 1}]', 10, 10)


def test_frame_count_mismatch_and_resample():
    tracks = T.parse_tracks(track_json([(0, 0), (40, 20), (40, 60)]), 80, 80)
    with pytest.raises(ValueError, match="track 1 has 3 points but 5 frames"):
        T.tracks_to_video(tracks, 80, 80, frames=5)
    resampled = T.resample_track(tracks[0], 5)
    expected = [(0, 0), (0.25, 0.125), (0.5, 0.25), (0.5, 0.5), (0.5, 0.75)]
    assert [c for p in resampled for c in p] == pytest.approx([c for p in expected for c in p])
    video = T.tracks_to_video(tracks, 80, 80, frames=5, resample=True)
    assert video.shape[0] == 5
    assert video[1, 10, 20, 0].item() == 1.0 and video[3, 40, 40, 0].item() == 1.0


def test_preview_draws_along_the_track():
    image = torch.zeros(100, 120, 3)
    tracks = T.parse_tracks(track_json([(10, 50), (110, 50)]), 120, 100)
    preview = T.draw_tracks_preview(image, tracks, 120, 100)
    assert preview.shape == (100, 120, 3) and preview.dtype == torch.float32
    line = preview[50, 30:100]
    assert (line.sum(dim=-1) > 0.5).all()  # coloured all along
    assert torch.allclose(line[0], torch.tensor(T.COLOURS[0]) / 255, atol=1 / 255)
    assert preview[5:20].abs().sum() == 0 and preview[80:].abs().sum() == 0  # away from the track stays black
    assert preview[50, 10].sum() > 0  # start dot


def test_preview_grey_background_and_resize():
    tracks = T.parse_tracks(track_json([(1, 1), (2, 2)], [(5, 5)]), 10, 10)
    grey = T.draw_tracks_preview(None, tracks, 64, 48)
    assert grey.shape == (48, 64, 3) and grey[40, 5].tolist() == pytest.approx([128 / 255] * 3)
    assert grey[24, 32].tolist() != grey[40, 5].tolist()  # the second track's start dot at (0.5, 0.5)
    resized = T.draw_tracks_preview(torch.ones(10, 10, 3), tracks, 64, 48)
    assert resized.shape == (48, 64, 3) and resized[40, 60].tolist() == [1.0, 1.0, 1.0]


def test_deeply_nested_json_is_a_value_error():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match=r"^the tracks JSON is malformed: its lists are nested far too deeply"):
        T.parse_tracks(deep, 10, 10)
    with pytest.raises(ValueError, match="the tracks JSON is malformed"):
        T.parse_tracks(json.dumps(deep), 10, 10)  # double-encoded
