"""The trajectory editor's spline and resampling maths (web/trajectory_math.js), run under node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from easyanimate_core import trajectory as T

WEB = Path(__file__).resolve().parents[1] / "web"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run_js(body: str):
    """Run an ES-module snippet with the maths module imported as M; it prints JSON, returned parsed."""
    script = f"import * as M from {json.dumps((WEB / 'trajectory_math.js').as_uri())};\n{body}"
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def spacing(points):
    return [((b["x"] - a["x"]) ** 2 + (b["y"] - a["y"]) ** 2) ** 0.5 for a, b in zip(points, points[1:])]


def test_straight_line_is_resampled_evenly():
    pts = run_js(
        "console.log(JSON.stringify(M.trackFromControlPoints([{x: 0, y: 0}, {x: 30, y: 40}, {x: 60, y: 80}], 11)))"
    )
    assert len(pts) == 11
    assert pts[0] == {"x": 0, "y": 0} and pts[-1] == {"x": 60, "y": 80}
    assert spacing(pts) == pytest.approx([10.0] * 10, abs=1e-6)


def test_curve_passes_through_control_points_with_even_spacing():
    controls = [{"x": 20, "y": 200}, {"x": 120, "y": 40}, {"x": 260, "y": 160}, {"x": 380, "y": 60}]
    out = run_js(
        f"const c = {json.dumps(controls)};\n"
        "const dense = M.catmullRom(c, 32);\n"
        "console.log(JSON.stringify({dense, track: M.trackFromControlPoints(c, 49, 400, 240)}))"
    )
    dense, track = out["dense"], out["track"]
    for c in controls:  # the spline interpolates its control points
        assert c in dense
    assert len(track) == 49
    assert track[0] == controls[0] and track[-1] == controls[-1]
    gaps = spacing(track)
    mean = sum(gaps) / len(gaps)
    assert max(gaps) / mean < 1.02 and min(gaps) / mean > 0.97  # chords of equal arcs on a smooth curve
    assert all(0 <= p["x"] <= 400 and 0 <= p["y"] <= 240 for p in track)


def test_overshoot_is_clamped_and_degenerate_inputs():
    out = run_js(
        "console.log(JSON.stringify({"
        "  edge: M.trackFromControlPoints([{x: 0, y: 0}, {x: 100, y: 0}, {x: 100, y: 100}], 25, 100, 100),"
        "  still: M.trackFromControlPoints([{x: 5, y: 6}], 4),"
        "  dup: M.trackFromControlPoints([{x: 5, y: 6}, {x: 5, y: 6}, {x: 15, y: 6}], 3),"
        "  none: M.trackFromControlPoints([], 4),"
        "  one: M.resampleByArcLength([{x: 1, y: 2}, {x: 3, y: 4}], 1),"
        "}))"
    )
    assert all(0 <= p["x"] <= 100 and 0 <= p["y"] <= 100 for p in out["edge"])
    assert out["still"] == [{"x": 5, "y": 6}] * 4
    assert out["dup"] == [{"x": 5, "y": 6}, {"x": 10, "y": 6}, {"x": 15, "y": 6}]
    assert out["none"] == [] and out["one"] == [{"x": 1, "y": 2}]


def test_editor_json_is_what_the_node_parses():
    text = run_js(
        "const t = M.trackFromControlPoints([{x: 10, y: 10}, {x: 90, y: 70}], 9, 100, 80);\n"
        "console.log(JSON.stringify(M.tracksToJSON([t, [{x: 1 / 3, y: 2 / 3}]])))"
    )
    tracks = T.parse_tracks(text, 100, 80)
    assert len(tracks) == 2 and len(tracks[0]) == 9
    assert tracks[0][0] == (0.1, 0.125) and tracks[0][-1] == (0.9, 0.875)
    assert json.loads(text)[1] == [{"x": 0.33, "y": 0.67}]


def test_editor_module_parses(tmp_path):
    """The editor imports ComfyUI's app.js, so only its syntax can be checked outside a browser."""
    copy = tmp_path / "trajectory_editor.mjs"
    copy.write_text((WEB / "trajectory_editor.js").read_text())
    done = subprocess.run([NODE, "--check", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
