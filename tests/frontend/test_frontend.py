"""The pack in the real ComfyUI frontend (comfyui-frontend-package), in headless Chromium.

`frontend_server.py` serves the frontend and answers its API calls from the fake host with this pack loaded;
`drive.mjs` (playwright-core) starts the app once, loads every workflows/*.json with `app.loadGraphData`,
takes `app.graphToPrompt()` and a screenshot, and draws on the trajectory editor with real mouse clicks.
The tests compare that with the host harness (`ui_to_prompt`), check the console, and check the layout the
frontend gives each workflow (node boxes apart, stored sizes not grown, Notes not scrolling).

Needs Chromium (/usr/bin/chromium, or EASYANIMATE_CHROMIUM), Node 20+ and `npm ci --prefix tests/frontend`;
`make test` sets them up. Missing tools fail the tests unless EASYANIMATE_SKIP_FRONTEND=1.
Screenshots and the raw results go to output/frontend/ (EASYANIMATE_FRONTEND_ARTIFACTS overrides).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from comfy_host import ui_to_prompt
from comfy_host.run_workflows import REPO_DIR, workflow_paths

HERE = os.path.dirname(os.path.abspath(__file__))
PACK_NAME = "ComfyUI-EasyAnimate"
TRAJECTORY_NODE = "EasyAnimateTrajectory"
WORKFLOWS = {os.path.splitext(os.path.basename(p))[0]: p for p in workflow_paths()}
# Trajectory editor clicks, in fractions of the editor canvas: two tracks ("New track" between them).
CLICKS = [[[0.2, 0.3], [0.5, 0.6], [0.8, 0.4]], [[0.3, 0.8], [0.7, 0.2]]]
SERVER_START_S, DRIVER_S = 180, 420

# Console messages that are the frontend's own, not ours: (kind, pattern on "text @ url", why it is harmless).
ALLOWED_CONSOLE = [
    # index.html links /user.css (a user stylesheet ComfyUI's old web/ folder shipped); the frontend package has
    # none, so ComfyUI answers 404 as well.
    ("error", r"status of 404 .* @ https?://[^/]+/user\.css$", "no user.css in the frontend package"),
    ("requestfailed", r"^GET https?://[^/]+/user\.css: net::ERR_ABORTED", "the same request"),
    # The frontend probes the user's custom stylesheet and node templates in the user folder; ComfyUI's
    # user_manager answers 404 when the file does not exist and the frontend treats 404 as "none".
    ("error", r"status of 404 .* @ https?://[^/]+/api/userdata/(user\.css|comfy\.templates\.json)$", "no user files"),
    ("requestfailed", r"^GET https?://[^/]+/api/userdata/(user\.css|comfy\.templates\.json): net::ERR_ABORTED", ""),
    # Listing user/default/subgraphs (saved blueprints): ComfyUI answers 404 for a folder that does not exist.
    ("error", r"status of 404 .* @ https?://[^/]+/api/userdata\?dir=subgraphs&", "no saved subgraph blueprints"),
    ("requestfailed", r"^GET https?://[^/]+/api/userdata\?dir=subgraphs&.*net::ERR_ABORTED", "the same request"),
]
ALLOWED_UNANSWERED = {"/user.css"}  # see above: ComfyUI does not answer it either
NODE_GAP = 8  # px, graph units: the least room between two nodes' boxes in a shipped workflow
# Console kinds that fail a test. "pack-*" are console calls whose stack runs through the pack's own scripts;
# the pack's warnings have their own test below.
FAILING_KINDS = {"error", "pageerror", "requestfailed", "dialog", "pack-error", "pack-uncaught"}


def _setup_hint() -> str:
    return (
        "install the frontend test tools with `make frontend-deps` (apt-get install chromium; npm ci --prefix "
        "tests/frontend; pip install -r requirements-dev.txt), or set EASYANIMATE_SKIP_FRONTEND=1 to skip them"
    )


def _missing_tools() -> list[str]:
    missing = []
    chromium = os.environ.get("EASYANIMATE_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        missing.append(f"Chromium ({chromium})")
    if shutil.which("node") is None:
        missing.append("Node.js (node)")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core")):
        missing.append("playwright-core (tests/frontend/node_modules)")
    for module in ("aiohttp", "comfyui_frontend_package"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"Python package {module}")
    return missing


def _artifacts_dir() -> str:
    path = os.environ.get("EASYANIMATE_FRONTEND_ARTIFACTS") or os.path.join(REPO_DIR, "output", "frontend")
    os.makedirs(path, exist_ok=True)
    return os.path.abspath(path)


def _start_server(root: str, log_path: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, os.path.join(HERE, "frontend_server.py"), root, "--pack-name", PACK_NAME]
    log = open(log_path, "w", encoding="utf-8")  # closed by _stop_server
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_DIR)
    server.log = log
    deadline = time.monotonic() + SERVER_START_S
    line = ""
    while time.monotonic() < deadline and server.poll() is None:
        line = server.stdout.readline()
        if line.startswith("listening on "):
            return server, line.split()[-1].rstrip("/") + "/"
    _stop_server(server)
    with open(log_path, encoding="utf-8") as f:
        raise RuntimeError(f"the frontend server did not start ({line!r}):\n{f.read()[-4000:]}")


def _stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    server.log.close()


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    """One browser session over every shipped workflow -> {results, object_info, requests, artifacts}."""
    missing = _missing_tools()
    if missing:
        if os.environ.get("EASYANIMATE_SKIP_FRONTEND") == "1":
            pytest.skip("EASYANIMATE_SKIP_FRONTEND=1")
        pytest.fail(f"missing for the frontend tests: {', '.join(missing)}; {_setup_hint()}", pytrace=False)
    root = str(tmp_path_factory.mktemp("frontend"))
    artifacts = _artifacts_dir()
    server, url = _start_server(root, os.path.join(artifacts, "server.log"))
    try:
        info = _get_json(url + "api/object_info")
        config = {
            "url": url,
            "chromium": os.environ.get("EASYANIMATE_CHROMIUM", "/usr/bin/chromium"),
            "artifacts": artifacts,
            "pack_url": f"/extensions/{PACK_NAME}/",
            "workflows": [{"name": name, "file": path} for name, path in WORKFLOWS.items()],
            "clicks": CLICKS,
        }
        config_path, results_path = os.path.join(root, "config.json"), os.path.join(artifacts, "results.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        if os.path.exists(results_path):
            os.remove(results_path)
        driver = subprocess.run(
            ["node", os.path.join(HERE, "drive.mjs"), config_path, results_path],
            capture_output=True,
            text=True,
            timeout=DRIVER_S,
            cwd=HERE,
        )
        if not os.path.exists(results_path):
            pytest.fail(f"drive.mjs wrote no results (exit {driver.returncode}):\n{driver.stderr[-4000:]}")
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
        requests = _get_json(url + "__harness__/requests")
        with open(os.path.join(artifacts, "requests.json"), "w", encoding="utf-8") as f:
            json.dump(requests, f, indent=1)
    finally:
        _stop_server(server)
    if results.get("error"):
        pytest.fail(f"the browser session failed: {results['error']}\n{driver.stderr[-4000:]}")
    print(f"\nfrontend screenshots and results: {artifacts}")
    return {"results": results, "object_info": info, "requests": requests, "artifacts": artifacts}


def _console_problems(messages: list[dict]) -> list[str]:
    problems = []
    for message in messages:
        if message["kind"] not in FAILING_KINDS:
            continue
        where = f"{message['text']} @ {message['url']}" if message.get("url") else message["text"]
        if any(kind == message["kind"] and re.search(pattern, where) for kind, pattern, _ in ALLOWED_CONSOLE):
            continue
        problems.append(f"[{message['kind']}] {where}")
    return problems


def _prompt_diff(frontend: dict, harness: dict) -> list[str]:
    """Readable differences between two API prompts, per node and input."""
    lines = []
    for node_id in sorted(set(frontend) | set(harness), key=str):
        a, b = frontend.get(node_id), harness.get(node_id)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"node {node_id}: frontend {a!r} != harness {b!r}")
            continue
        for key in sorted((set(a) | set(b)) - {"inputs"}):
            if a.get(key) != b.get(key):
                lines.append(f"node {node_id} {key}: frontend {a.get(key)!r} != harness {b.get(key)!r}")
        inputs_a, inputs_b = a.get("inputs", {}), b.get("inputs", {})
        for key in sorted(set(inputs_a) | set(inputs_b)):
            if inputs_a.get(key, "<absent>") != inputs_b.get(key, "<absent>"):
                got, want = inputs_a.get(key, "<absent>"), inputs_b.get(key, "<absent>")
                lines.append(f"node {node_id} ({a['class_type']}) input {key}: frontend {got!r} != harness {want!r}")
    return lines


def test_frontend_starts_with_the_pack(frontend):
    startup = frontend["results"]["startup"]
    assert startup["frontend_version"] == "1.58.1"
    assert "EasyAnimate.TrajectoryEditor" in startup["extensions"]
    served = {r["path"]: r["status"] for r in frontend["requests"] if r["path"].startswith(f"/extensions/{PACK_NAME}/")}
    web_dir = os.path.join(REPO_DIR, "web")
    ours = {f"/extensions/{PACK_NAME}/{name}" for name in os.listdir(web_dir) if name.endswith(".js")}
    assert {path: served.get(path) for path in ours} == dict.fromkeys(ours, 200)  # every web/ script loaded
    assert _console_problems(startup["console"]) == []
    unanswered = sorted({r["path"] for r in frontend["requests"] if r.get("unanswered")} - ALLOWED_UNANSWERED)
    assert unanswered == [], "the frontend asked for things frontend_server.py does not answer"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_in_the_frontend(frontend, name):
    result = frontend["results"]["workflows"][name]
    assert result.get("error") is None, result.get("error")
    assert [n for n in result["nodes"] if not n["registered"] or n["has_errors"]] == []  # no missing nodes
    assert result["dialogs"] == [] and result["notices"] == []  # no missing-node or load-error message
    assert _console_problems(result["console"]) == []
    expected = ui_to_prompt(result["workflow"], frontend["object_info"])
    assert _prompt_diff(result["prompt"], expected) == []  # app.graphToPrompt() == the harness's conversion
    assert os.path.isfile(os.path.join(frontend["artifacts"], f"{name}.png"))


def _node_name(node: dict) -> str:
    title = node.get("title")
    return f"#{node['id']} {title!r} ({node['type']})"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_nodes_do_not_overlap(frontend, name):
    """As the frontend lays the workflow out (nodes grown to fit their widgets, title bars included), no two
    nodes' boxes come within NODE_GAP px of each other: nothing hides another node's widgets or title."""
    nodes = frontend["results"]["workflows"][name]["layout"]
    overlaps = []
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["bounds"]
        for b in nodes[i + 1 :]:
            bx, by, bw, bh = b["bounds"]
            if (
                ax < bx + bw + NODE_GAP
                and bx < ax + aw + NODE_GAP
                and ay < by + bh + NODE_GAP
                and by < ay + ah + NODE_GAP
            ):
                overlaps.append(f"{name}: {_node_name(a)} {a['bounds']} and {_node_name(b)} {b['bounds']}")
    assert not overlaps, f"nodes overlap in the frontend (less than {NODE_GAP} px apart):\n" + "\n".join(overlaps)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_sizes_are_what_the_frontend_draws(frontend, name):
    """Each node's stored size is at least the size the frontend gives it on load (it grows a node that is too
    small for its widgets), so the positions in the file are laid out with the sizes really drawn."""
    result = frontend["results"]["workflows"][name]
    stored = {str(node["id"]): node["size"] for node in result["workflow"]["nodes"]}
    grown = [
        f"{name}: {_node_name(n)} stored {stored[str(n['id'])]}, drawn {[round(v) for v in n['size']]}"
        for n in result["layout"]
        if any(drawn > want + 1 for drawn, want in zip(n["size"], stored[str(n["id"])]))
    ]
    assert not grown, "the frontend grows these nodes past their stored size:\n" + "\n".join(grown)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_notes_show_all_their_text(frontend, name):
    """A Note is read as the workflow opens: its text fits the box, with no scrolling."""
    scrolls = [
        f"{name}: {_node_name(n)} size {[round(v) for v in n['size']]}: text {held} px high in a {shown} px box"
        for n in frontend["results"]["workflows"][name]["layout"]
        if n["type"] in ("Note", "MarkdownNote")
        for held, shown in n["text_heights"]
        if held > shown + 1
    ]
    assert not scrolls, "these notes scroll:\n" + "\n".join(scrolls)


def test_trajectory_editor_takes_mouse_clicks(frontend):
    from easyanimate_core.trajectory import parse_tracks

    drawn = {n: r["trajectory"] for n, r in frontend["results"]["workflows"].items() if "trajectory" in r}
    assert drawn, f"no shipped workflow has a {TRAJECTORY_NODE} node to draw on"
    for name, result in drawn.items():
        assert "error" not in result, f"{name}: {result['error']}"
        ref_w, ref_h, frames = result["ref_width"], result["ref_height"], result["frames"]
        tracks = parse_tracks(result["tracks_json"], ref_w, ref_h)  # fractions of the frame
        assert [len(track) for track in tracks] == [frames] * len(CLICKS), name
        for track, clicks in zip(tracks, CLICKS):
            # The curve starts and ends on the first and last click (canvas fractions = frame fractions).
            for point, click in ((track[0], clicks[0]), (track[-1], clicks[-1])):
                assert point == pytest.approx(tuple(click), abs=0.01), name
        assert result["prompt_inputs"]["tracks_json"] == result["tracks_json"], name  # what Queue would send


def test_trajectory_editor_with_comfyui_undo_hand_edits_and_zoom(frontend):
    """ComfyUI's Ctrl+Z takes back the last click and Ctrl+Shift+Z brings it again (its history records the
    editor's changes), with the points, the editor and tracks_json agreeing; typing in tracks_json drops the
    points and the editor shows the text; at zoom 1.5 a click lands where it is on the picture (inside the
    canvas's border)."""
    drawn = [r["trajectory"] for r in frontend["results"]["workflows"].values() if "trajectory" in r]
    checks = drawn[0]["checks"]
    last = CLICKS[-1]
    for state, clicks in ((checks["undone"], last[:-1]), (checks["redone"], last)):
        assert len(state["points"]) == len(CLICKS) and state["editor"] == state["points"]
        assert len(state["points"][-1]) == len(clicks)
    assert checks["redone"]["tracks_json"] == drawn[0]["tracks_json"] != checks["undone"]["tracks_json"]
    hand = checks["hand_edited"]
    assert hand["tracks_json"] == checks["hand_typed"] and hand["points"] == [[]] and hand["editor"] == [[]]
    assert hand["status"].startswith("1 track(s) from tracks_json")
    corner = checks["corner"]
    assert corner["zoom"] == pytest.approx(1.5)
    ((point,),) = corner["got"]
    assert (point["x"], point["y"]) == pytest.approx((corner["expected"]["x"], corner["expected"]["y"]), abs=0.3)
    sizes = checks["sizes"]  # Use image size sets both sizes; one Ctrl+Z (after the click that followed) undoes both
    assert (sizes["matched"]["w"], sizes["matched"]["h"]) == tuple(sizes["before"]["image"])
    assert (sizes["matched"]["w"], sizes["matched"]["h"]) != (sizes["before"]["w"], sizes["before"]["h"])
    assert (sizes["undone"]["w"], sizes["undone"]["h"]) == (sizes["before"]["w"], sizes["before"]["h"])
    # the canvas buffer covers the device pixels on screen at that zoom (sharp when zoomed in or on high DPI):
    # zooming changes no layout, so the editor resizes it when the pointer comes (it was sized at zoom 1)
    buffer = corner["buffer"]
    assert buffer["width"] == math.floor(buffer["css"] * buffer["dpr"] * corner["zoom"] + 0.5)  # JS Math.round
    assert corner["zoomedBuffer"] != buffer["width"]


def test_pack_scripts_do_not_warn(frontend):
    """The pack's scripts use no deprecated frontend API (LiteGraph.alwaysRepeatWarnings is on)."""
    phases = {"startup": frontend["results"]["startup"], **frontend["results"]["workflows"]}
    warnings = {
        f"{name}: {m['text'].splitlines()[0]} ({m['count']}x)"
        for name, phase in phases.items()
        for m in phase.get("console", [])
        if m["kind"] == "pack-warn"
    }
    assert sorted(warnings) == []
