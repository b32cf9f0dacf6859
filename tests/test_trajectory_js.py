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
if NODE is None:  # the editor is part of the product: no silent skip (make test's set-up needs Node.js too)
    raise RuntimeError("Node.js (node) is needed for the trajectory editor tests: apt-get install nodejs")


def run_js(body: str, module: str = "trajectory_math.js"):
    """Run an ES-module snippet with a web module (default the maths) imported as M; it prints JSON, returned
    parsed."""
    script = f"import * as M from {json.dumps((WEB / module).as_uri())};\n{body}"
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
    assert [c for p in out["dup"] for c in (p["x"], p["y"])] == pytest.approx([5, 6, 10, 6, 15, 6], abs=1e-9)
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


def test_imported_tracks_are_read_like_tracks_json():
    """tracks_json written elsewhere: a list of tracks, one bare track, or JSON inside a JSON string; points
    without finite x and y are dropped; anything else is no tracks (the editor then shows none)."""
    track = [{"x": 1, "y": 2}, {"x": "a", "y": 3}, {"x": 4.5, "y": 6}]
    values = [json.dumps([track]), json.dumps(track), json.dumps(json.dumps([track, track])), "not json", "", "7"]
    got = run_js(f"console.log(JSON.stringify({json.dumps(values)}.map(M.parseImportedTracks)))", "trajectory_draw.js")
    kept = [{"x": 1, "y": 2}, {"x": 4.5, "y": 6}]
    assert got == [[kept], [kept], [kept, kept], [], [], []]


def test_editor_module_parses(tmp_path):
    """The editor imports ComfyUI's app.js, so only its syntax can be checked outside a browser."""
    copy = tmp_path / "trajectory_editor.mjs"
    copy.write_text((WEB / "trajectory_editor.js").read_text())
    done = subprocess.run([NODE, "--check", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


# Just enough of the browser and of ComfyUI for the editor to run under node: DOM elements record their
# listeners, the 2D context records what is set on it and swallows other drawing calls (setTransform's last
# arguments are kept), and the canvas is shown at twice the reference size (its on-screen box is its CSS size).
STUB_DOM = """
export const registered = [];
function element(tag) {
  return {
    tagName: tag, style: {}, children: [], listeners: {}, width: 300, height: 150,
    get clientWidth() { return parseFloat(this.style.width) || 400; },  // the stage: 400x300
    get clientHeight() { return parseFloat(this.style.height) || 300; },
    appendChild(c) { this.children.push(c); return c; },
    append(...cs) { this.children.push(...cs); },
    addEventListener(type, fn) { this.listeners[type] = fn; },
    getContext() {
      const ctx = { lineWidths: [], setTransform: (...m) => (ctx.transform = m) };
      const record = (t, k, v) => ((t[k] = v), k === "lineWidth" && t.lineWidths.push(v), true);
      return (this.ctx ??= new Proxy(ctx, { get: (t, k) => (k in t ? t[k] : () => {}), set: record }));
    },
    getBoundingClientRect() {
      const width = parseFloat(this.style.width) || 2 * this.width;
      return { left: 0, top: 0, width, height: parseFloat(this.style.height) || 2 * this.height };
    },
    focus() {}, setPointerCapture() {}, releasePointerCapture() {},
  };
}
globalThis.document = { createElement: element, getElementById: () => null, head: { appendChild() {} } };
globalThis.ResizeObserver = class { observe() {} disconnect() {} };
globalThis.Image = class { set src(value) { globalThis.lastImageSrc = value; } };
"""

EDITOR_PRELUDE = """
import { registered } from "./stub_dom.mjs";
await import("./extensions/pack/trajectory_editor.js");
const ext = registered[0];
class Node {
  constructor() {
    this.widgets = [
      { name: "tracks_json", value: "[]" }, { name: "ref_width", value: 200 },
      { name: "ref_height", value: 100 }, { name: "frames", value: 5 },
    ];
    this.properties = {};
    this.size = [300, 200];
    this.inputs = [{ name: "reference_image", link: null }];
  }
  addDOMWidget(name, type, element, options) {
    const w = { name, type, element, options };
    this.widgets.push(w);
    return w;
  }
  setSize(s) { this.size = s; }
  computeSize() { return [300, 400]; }
}
await ext.beforeRegisterNodeDef(Node, { name: "EasyAnimateTrajectory" }, {});
const node = new Node();
node.onNodeCreated();
const editor = node.trajectoryEditor;
const event = (x, y, button = 0) => ({
  clientX: 2 * x, clientY: 2 * y, button, pointerId: 1, key: "", preventDefault() {}, stopPropagation() {},
});
const canvas = editor.canvas.listeners;
const json = () => JSON.parse(node.widgets[0].value);
const points = () => JSON.parse(JSON.stringify(node.properties.easyanimate_trajectory_points));
const setWidget = (n, i, value) => {  // as the frontend does: value, then the widget's callback
  n.widgets[i].value = value;
  n.widgets[i].callback?.(value);
};
const reload = (from) => {  // a saved workflow opened again: LGraphNode.configure sets widgets before onConfigure
  const copy = new Node();
  copy.onNodeCreated();
  copy.properties = JSON.parse(JSON.stringify(from.properties));
  from.widgets.slice(0, 4).forEach((w, i) => (copy.widgets[i].value = w.value));
  copy.onConfigure({});
  return copy;
};
const out = { name: ext.name };
"""

EDITOR_SCRIPT = """
canvas.pointerdown(event(10, 10));
canvas.pointerdown(event(190, 90));
out.first = json();
canvas.keydown({ ...event(0, 0), key: "n" });
canvas.pointerdown(event(100, 50));
out.points = points();
canvas.pointerdown(event(12, 11));  // grabs the point at (10, 10)
canvas.pointermove(event(20, 30));
canvas.pointerup(event(20, 30));
out.dragged = points()[0][0];
editor.undo();
out.undone = points()[0][0];
node.widgets[3].value = 3;
node.widgets[3].callback(3);
out.threeFrames = json();
out.reopened = reload(node).trajectoryEditor.tracks;
node.onExecuted({ bg_image: [{ filename: "easyanimate_trajectory_0a.png", subfolder: "", type: "temp" }] });
out.background = globalThis.lastImageSrc;
editor.clear();
out.cleared = json();
"""


def run_editor(tmp_path, script: str) -> dict:
    """Run EDITOR_PRELUDE + `script` on the editor under the stub DOM; it prints `out` as JSON, returned parsed."""
    (tmp_path / "stub_dom.mjs").write_text(STUB_DOM)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(
        'import { registered } from "../stub_dom.mjs";\n'
        "export const app = { registerExtension: (e) => registered.push(e), graph: null };\n"
    )
    (tmp_path / "scripts" / "api.js").write_text("export const api = { apiURL: (p) => p };\n")
    pack = tmp_path / "extensions" / "pack"  # ComfyUI serves WEB_DIRECTORY at /extensions/<pack>/
    pack.mkdir(parents=True)
    for path in WEB.glob("*.js"):
        shutil.copy(path, pack / path.name)
    (tmp_path / "run.mjs").write_text(EDITOR_PRELUDE + script + "console.log(JSON.stringify(out));\n")
    done = subprocess.run([NODE, str(tmp_path / "run.mjs")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_editor_runs_with_a_stub_dom(tmp_path):
    out = run_editor(tmp_path, EDITOR_SCRIPT)

    assert out["name"] == "EasyAnimate.TrajectoryEditor"
    line = [{"x": 10 + 45 * i, "y": 10 + 20 * i} for i in range(5)]  # two clicks: a straight track, 5 frames
    assert [[(p["x"], p["y"]) for p in t] for t in out["first"]] == [[(p["x"], p["y"]) for p in line]]
    assert out["points"] == [[{"x": 10, "y": 10}, {"x": 190, "y": 90}], [{"x": 100, "y": 50}]]
    assert out["dragged"] == {"x": 20, "y": 30} and out["undone"] == {"x": 10, "y": 10}
    assert [len(t) for t in out["threeFrames"]] == [3, 3]
    assert out["threeFrames"][0][1] == {"x": 100, "y": 50}
    assert out["reopened"] == out["points"]
    assert out["cleared"] == []
    # the node's ui reference (a temp file, see host.save_temp_png) is fetched through ComfyUI's /view
    assert out["background"] == "/view?filename=easyanimate_trajectory_0a.png&subfolder=&type=temp"


def test_canvas_buffer_follows_the_screen_and_lines_keep_their_screen_width(tmp_path):
    """The canvas buffer covers the device pixels the editor occupies (CSS size x devicePixelRatio), drawing is
    scaled from reference pixels to it, and line widths are in screen pixels whatever the reference size: at a
    4x smaller reference the lines are 4x thinner in reference pixels, so they look the same on screen."""
    out = run_editor(
        tmp_path,
        """
globalThis.devicePixelRatio = 2;
canvas.pointerdown(event(10, 10));
canvas.pointerdown(event(190, 90));  // 200x100 reference shown at 400x200 CSS px
canvas.keydown({ ...event(0, 0), key: "n" });
canvas.pointerdown(event(100, 50));  // a second track, now the current one
const ctx = editor.ctx;
out.buffer = [editor.canvas.width, editor.canvas.height];
out.transform = ctx.transform;
out.widths = [...new Set(ctx.lineWidths)].sort();
ctx.lineWidths.length = 0;
setWidget(node, 1, 50);  // 50x100: shown at 150x300 CSS px in the 400x300 stage
setWidget(node, 2, 100);
out.smallBuffer = [editor.canvas.width, editor.canvas.height];
out.smallTransform = ctx.transform;
out.smallWidths = [...new Set(ctx.lineWidths)].sort();
""",
    )
    assert out["buffer"] == [800, 400] and out["transform"] == [4, 0, 0, 4, 0, 0]
    # 0.5 reference px per CSS px: curve 2 px, rings 1.5 px (2 px for the current track) on screen
    assert out["widths"] == [0.75, 1]
    assert out["smallBuffer"] == [300, 600] and out["smallTransform"] == [6, 0, 0, 6, 0, 0]
    assert out["smallWidths"] == [0.5, 0.6666666666666666]  # 1/3 reference px per CSS px


def test_tracks_json_edited_by_hand_wins_over_the_control_points(tmp_path):
    """Typing in tracks_json leaves the editor's curves behind: the editor drops its points and shows the text,
    later changes (frames) do not overwrite it, a workflow saved that way opens the same, and Undo brings the
    points back."""
    out = run_editor(
        tmp_path,
        """
canvas.pointerdown(event(10, 10));
canvas.pointerdown(event(190, 90));
const hand = '[[{"x": 5, "y": 6}, {"x": 50, "y": 60}]]';
setWidget(node, 0, hand);  // the textarea's input event
out.points = points();
out.status = editor.status.textContent;
setWidget(node, 3, 9);  // frames
out.afterFrames = node.widgets[0].value;
const saved = reload(node);
out.savedJson = saved.widgets[0].value;
// saved before the fix: the old control points beside the hand-edited text
const stale = new Node();
stale.onNodeCreated();
stale.properties = { easyanimate_trajectory_points: [[{ x: 10, y: 10 }, { x: 190, y: 90 }]] };
stale.widgets[0].value = hand;
stale.onConfigure({});
out.staleJson = stale.widgets[0].value;
out.staleTracks = stale.trajectoryEditor.tracks;
stale.trajectoryEditor.undo();
out.staleUndone = stale.trajectoryEditor.tracks;
editor.undo();
out.undone = points();
out.undoneJson = json();
""",
    )
    hand = '[[{"x": 5, "y": 6}, {"x": 50, "y": 60}]]'
    assert out["points"] == [[]] and "from tracks_json" in out["status"]
    assert out["afterFrames"] == hand and out["savedJson"] == hand
    assert out["staleJson"] == hand and out["staleTracks"] == [[]]
    assert out["staleUndone"] == [[{"x": 10, "y": 10}, {"x": 190, "y": 90}]]
    assert out["undone"] == [[{"x": 10, "y": 10}, {"x": 190, "y": 90}]]
    assert [len(t) for t in out["undoneJson"]] == [9]  # the points' curve, written again at the new frame count


def test_undo_after_a_new_reference_size_keeps_the_new_scale(tmp_path):
    out = run_editor(
        tmp_path,
        """
canvas.pointerdown(event(10, 10));
canvas.pointerdown(event(190, 90));
setWidget(node, 1, 400);  // ref_width 200 -> 400: the points keep their place on the picture
out.scaled = points();
editor.undo();  // takes back the second click
out.undone = points();
out.json = json();
""",
    )
    assert out["scaled"] == [[{"x": 20, "y": 10}, {"x": 380, "y": 90}]]
    assert out["undone"] == [[{"x": 20, "y": 10}]]
    assert out["json"] == [[{"x": 20, "y": 10}] * 5]


def test_shortcuts_with_modifiers_are_left_to_comfyui(tmp_path):
    """Ctrl+Z / Ctrl+Shift+Z are ComfyUI's undo and redo (its capture-phase listener sees them anyway); the
    editor must not undo on top of them."""
    out = run_editor(
        tmp_path,
        """
canvas.pointerdown(event(10, 10));
canvas.pointerdown(event(190, 90));
let stopped = 0;
const key = (k, mods) => ({ ...event(0, 0), key: k, ...mods, stopPropagation() { stopped += 1; } });
canvas.keydown(key("z", { ctrlKey: true }));
canvas.keydown(key("Z", { ctrlKey: true, shiftKey: true }));
canvas.keydown(key("z", { metaKey: true }));
canvas.keydown(key("n", { ctrlKey: true }));
out.withModifiers = points();
out.stopped = stopped;
canvas.keydown(key("z", {}));
out.plain = points();
""",
    )
    assert out["withModifiers"] == [[{"x": 10, "y": 10}, {"x": 190, "y": 90}]] and out["stopped"] == 0
    assert out["plain"] == [[{"x": 10, "y": 10}]]


def test_imported_tracks_are_the_tracks_the_node_reads():
    """Every form parse_tracks accepts is shown as the same tracks (KJNodes' pairs, JSON strings, quotes)."""
    one = [{"x": 10, "y": 20}, {"x": 30, "y": 40}]
    values = [
        json.dumps([one, one[:1]]),
        json.dumps(one),
        json.dumps(json.dumps(one)),
        json.dumps(one).replace('"', "'"),
        json.dumps([json.dumps(one), json.dumps([{"x": 50, "y": 50}])]),
        "[[[10, 20], [30, 40]]]",
        "[[10, 20], [30, 40]]",
        '{"x": 10, "y": 20}',
    ]
    got = run_js(f"console.log(JSON.stringify({json.dumps(values)}.map(M.parseImportedTracks)))", "trajectory_draw.js")
    for value, tracks in zip(values, got):
        expected = T.parse_tracks(value, 100, 100)
        assert [[(p["x"] / 100, p["y"] / 100) for p in t] for t in tracks] == expected, value
