// Drives the real ComfyUI frontend in headless Chromium for tests/frontend/test_frontend.py.
//
//   node tests/frontend/drive.mjs CONFIG.json RESULTS.json
//
// CONFIG: {url, chromium, artifacts, pack_url, workflows: [{name, file}], clicks: [[[fx, fy], ...], ...]}
// (pack_url: "/extensions/<pack folder>/", to tell the pack's console calls from the frontend's)
// One browser and one page: the app starts once, then every workflow is loaded with the app's own
// app.loadGraphData(), checked, converted with app.graphToPrompt() and screenshotted. In every graph that
// holds an EasyAnimateTrajectory node, the editor canvas is clicked with real mouse events: the Clear
// button, then one track per entry of `clicks` (fractions of the canvas), "New track" between tracks; then
// ComfyUI's undo and redo, typing in tracks_json, and a click at graph zoom 1.5 (editorChecks).
// RESULTS: {startup: {console, requests...}, workflows: {name: {...}}}; the Python side asserts on it.

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const TRAJECTORY_NODE = "EasyAnimateTrajectory";
const [configPath, resultsPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
const results = { startup: {}, workflows: {} };
let phase = "startup"; // console messages are filed under the phase they happen in
const messages = { startup: [] };

function record(kind, text, location) {
  const list = (messages[phase] ??= []);
  const url = location?.url ?? "";
  const same = list.find((m) => m.kind === kind && m.text === text && m.url === url);
  if (same) same.count += 1; // repeated deprecation warnings: one entry with a count
  else list.push({ kind, text, url, line: location?.lineNumber ?? null, count: 1 });
}

async function collectPackConsole(page) {
  const calls = await page.evaluate(() => window.__packConsole.splice(0));
  for (const c of calls) record(`pack-${c.level}`, `${c.text}\n${c.stack}`);
}

function save() {
  for (const [name, list] of Object.entries(messages)) {
    const target = name === "startup" ? results.startup : results.workflows[name];
    if (target) target.console = list;
  }
  fs.writeFileSync(resultsPath, JSON.stringify(results, null, 1));
}

const nextFrames = (page) =>
  page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));

/** What the page shows after a load: graph nodes without a registered type, and visible dialogs/toasts. */
async function inspect(page) {
  return page.evaluate(() => {
    const graph = window.app.rootGraph ?? window.app.graph;
    const registered = window.LiteGraph.registered_node_types;
    const nodes = graph.nodes.map((n) => ({ id: n.id, type: n.type, registered: n.type in registered, has_errors: !!n.has_errors }));
    const visible = (el) => el.offsetParent !== null || getComputedStyle(el).position === "fixed";
    const dialogs = [...document.querySelectorAll(".p-dialog, [role=dialog], [role=alertdialog]")]
      .filter(visible)
      .map((el) => el.innerText.trim().slice(0, 500));
    // Missing nodes and load errors are announced in a role=status notice (1.58), older ones in toasts.
    const notices = [...document.querySelectorAll("[role=status], [role=alert], .p-toast-message")]
      .filter(visible)
      .map((el) => el.innerText.trim().slice(0, 500))
      .filter(Boolean);
    return { nodes, dialogs, notices };
  });
}

/**
 * Every node as the frontend lays it out after a load, in graph coordinates: `bounds` is LiteGraph's
 * getBounding() (the title bar included, [x, y, w, h]); `size` the body size it settled on, which it grows
 * from the stored size to fit the widgets; `min_size` its computeSize().
 */
async function layout(page) {
  return page.evaluate(() => {
    const graph = window.app.rootGraph ?? window.app.graph;
    return graph.nodes.map((n) => {
      n.updateArea?.(); // boundingRect is otherwise refreshed when the node is drawn
      return {
      id: n.id,
      type: n.type,
      title: n.title,
      pos: [...n.pos],
      size: [...n.size],
      min_size: [...n.computeSize()],
      bounds: [...n.getBounding()],
      // Text boxes (a Note's text): [the height its text needs, the height it has]; more needed = it scrolls.
      text_heights: (n.widgets ?? [])
        .map((w) => w.element?.querySelector?.("textarea") ?? (w.element?.tagName === "TEXTAREA" ? w.element : null))
        .filter(Boolean)
        .map((el) => {
          const shown = el.clientHeight;
          const height = el.style.height;
          el.style.height = "0px"; // scrollHeight is then the text's own height (never less than the box's)
          const needed = el.scrollHeight;
          el.style.height = height;
          return [needed, shown];
        }),
      };
    });
  });
}

/** Real mouse clicks on the trajectory editor of node `nodeId`; returns what the widgets hold after. */
async function drawTracks(page, nodeId, clicks) {
  // Put the node at the top left of the canvas at zoom 1, so the DOM widget is on screen.
  await page.evaluate((id) => {
    const app = window.app;
    const node = app.rootGraph.getNodeById(id);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [80 - node.pos[0], 120 - node.pos[1]];
    app.canvas.setDirty(true, true);
  }, nodeId);
  await nextFrames(page);
  await page.waitForTimeout(300);
  const box = await page.evaluate((id) => {
    const node = window.app.rootGraph.getNodeById(id);
    const widget = node.widgets.find((w) => w.element?.querySelector?.("canvas"));
    if (!widget) return { error: `node #${id} has no DOM widget holding a <canvas> (widgets: ${node.widgets.map((w) => w.name)})` };
    const canvas = widget.element.querySelector("canvas");
    canvas.dataset.testTarget = "trajectory-canvas";
    const buttons = Object.fromEntries(
      [...widget.element.querySelectorAll("button")].map((b, i) => {
        b.dataset.testTarget = `trajectory-button-${i}`;
        return [b.textContent.trim(), `[data-test-target="trajectory-button-${i}"]`];
      }),
    );
    const r = canvas.getBoundingClientRect();
    const centre = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return { left: r.left, top: r.top, width: r.width, height: r.height, buttons, onTop: centre === canvas };
  }, nodeId);
  if (box.error) return box;
  if (!box.onTop || !(box.width > 20 && box.height > 20)) return { error: `editor canvas not clickable: ${JSON.stringify(box)}` };
  const clickButton = async (label) => {
    const selector = box.buttons[label];
    if (!selector) throw new Error(`trajectory editor has no "${label}" button (has ${Object.keys(box.buttons)})`);
    const b = await page.locator(selector).boundingBox();
    await page.mouse.click(b.x + b.width / 2, b.y + b.height / 2);
  };
  await clickButton("Clear");
  const clicked = [];
  for (const [t, track] of clicks.entries()) {
    if (t > 0) await clickButton("New track");
    for (const [fx, fy] of track) {
      await page.mouse.click(box.left + fx * box.width, box.top + fy * box.height);
      clicked.push([t, fx, fy]);
    }
  }
  await nextFrames(page);
  const after = await page.evaluate((id) => {
    const node = window.app.rootGraph.getNodeById(id);
    const value = (name) => node.widgets.find((w) => w.name === name)?.value;
    return { tracks_json: value("tracks_json"), ref_width: value("ref_width"), ref_height: value("ref_height"), frames: value("frames") };
  }, nodeId);
  const { output } = await page.evaluate(() => window.app.graphToPrompt());
  return { ...after, box, clicked, prompt_inputs: output[String(nodeId)]?.inputs ?? null };
}

/** What the Trajectory node `nodeId` holds now: tracks_json, its control points, the editor's and its status. */
function editorState(page, nodeId) {
  return page.evaluate((id) => {
    const node = window.app.rootGraph.getNodeById(id); // a new node object after ComfyUI's undo
    return {
      tracks_json: node.widgets.find((w) => w.name === "tracks_json").value,
      points: node.properties.easyanimate_trajectory_points ?? null,
      editor: node.trajectoryEditor.tracks,
      status: node.trajectoryEditor.status.textContent,
    };
  }, nodeId);
}

/**
 * After drawTracks, with the editor focused: ComfyUI's Ctrl+Z and Ctrl+Shift+Z; typing in tracks_json; then, at
 * graph zoom 1.5, Clear and one click 3 screen pixels inside the picture's top-left corner.
 */
async function editorChecks(page, nodeId) {
  const out = {};
  const settle = async () => {
    await page.waitForTimeout(300); // ComfyUI undoes in an animation frame, then reloads the graph
    await nextFrames(page);
  };
  await page.keyboard.press("Control+z");
  await settle();
  out.undone = await editorState(page, nodeId);
  await page.keyboard.press("Control+Shift+z");
  await settle();
  out.redone = await editorState(page, nodeId);

  const textarea = await page.evaluate((id) => {
    const node = window.app.rootGraph.getNodeById(id);
    const r = node.widgets.find((w) => w.name === "tracks_json").element.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  }, nodeId);
  await page.mouse.click(textarea.x, textarea.y);
  await page.keyboard.press("Control+a");
  await page.keyboard.type(out.hand_typed = '[[{"x": 5, "y": 6}, {"x": 50, "y": 60}]]');
  await settle();
  out.hand_edited = await editorState(page, nodeId);

  const target = await page.evaluate((id) => {
    const app = window.app;
    const node = app.rootGraph.getNodeById(id);
    app.canvas.ds.scale = 1.5;
    app.canvas.ds.offset = [60 - node.pos[0], 100 - node.pos[1]];
    app.canvas.setDirty(true, true);
    return new Promise((resolve) =>
      requestAnimationFrame(() =>
        requestAnimationFrame(() => {
          const c = node.trajectoryEditor.canvas;
          const ref = node.trajectoryEditor.refSize(); // reference pixels (the buffer follows the screen)
          const r = c.getBoundingClientRect();
          const zoom = r.width / c.offsetWidth;
          const left = r.left + c.clientLeft * zoom; // the picture, inside the border
          const top = r.top + c.clientTop * zoom;
          const clear = [...node.trajectoryEditor.element.querySelectorAll("button")].find((b) => b.textContent === "Clear");
          const b = clear.getBoundingClientRect();
          resolve({
            clear: { x: b.left + b.width / 2, y: b.top + b.height / 2 },
            click: { x: left + 3, y: top + 3 },
            expected: { x: (3 / (c.clientWidth * zoom)) * ref.w, y: (3 / (c.clientHeight * zoom)) * ref.h },
            zoomedBuffer: c.width, // before the pointer comes: still sized for the zoom of the last redraw
            zoom,
          });
        }),
      ),
    );
  }, nodeId);
  const buffer = () =>
    page.evaluate((id) => {
      const c = window.app.rootGraph.getNodeById(id).trajectoryEditor.canvas;
      return { width: c.width, height: c.height, css: c.clientWidth, dpr: window.devicePixelRatio };
    }, nodeId);
  await page.mouse.move(target.click.x, target.click.y); // the pointer enters the picture at zoom 1.5
  await nextFrames(page);
  const hovered = await buffer();
  await page.mouse.click(target.clear.x, target.clear.y);
  await page.mouse.click(target.click.x, target.click.y);
  await nextFrames(page);
  out.corner = { ...target, got: (await editorState(page, nodeId)).points, buffer: hovered };

  // "Use image size" sets ref_width and ref_height: one change, so one Ctrl+Z brings both back
  const refSize = () =>
    page.evaluate((id) => {
      const node = window.app.rootGraph.getNodeById(id);
      const value = (name) => node.widgets.find((w) => w.name === name).value;
      const image = node.trajectoryEditor.image;
      return { w: value("ref_width"), h: value("ref_height"), image: [image?.naturalWidth, image?.naturalHeight] };
    }, nodeId);
  out.sizes = { before: await refSize() };
  const match = await page.evaluate((id) => {
    const node = window.app.rootGraph.getNodeById(id);
    const button = [...node.trajectoryEditor.element.querySelectorAll("button")].find((b) => b.textContent === "Use image size");
    const r = button.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  }, nodeId);
  await page.mouse.click(match.x, match.y);
  await settle();
  out.sizes.matched = await refSize();
  await page.mouse.click(target.click.x + 20, target.click.y + 20); // focus the editor, as a user would
  await page.keyboard.press("Control+z"); // takes back the click above (ComfyUI's history) ...
  await settle();
  await page.keyboard.press("Control+z"); // ... then the size change, both sizes at once
  await settle();
  out.sizes.undone = await refSize();
  return out;
}

async function main() {
  fs.mkdirSync(config.artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    // Console calls made from the pack's own scripts (seen in the call stack): none may warn or fail.
    await page.addInitScript((packUrl) => {
      window.__packConsole = [];
      for (const level of ["warn", "error"]) {
        const original = console[level];
        console[level] = function (...args) {
          const stack = new Error().stack ?? "";
          if (stack.includes(packUrl)) window.__packConsole.push({ level, text: args.map(String).join(" "), stack });
          return original.apply(this, args);
        };
      }
      window.addEventListener("error", (e) => {
        if (String(e.filename).includes(packUrl)) window.__packConsole.push({ level: "uncaught", text: e.message, stack: e.error?.stack ?? "" });
      });
    }, config.pack_url);
    page.on("console", (m) => {
      if (["error", "warning"].includes(m.type())) record(m.type(), m.text(), m.location());
    });
    page.on("pageerror", (e) => record("pageerror", `${e.name}: ${e.message}\n${e.stack ?? ""}`));
    page.on("requestfailed", (r) => record("requestfailed", `${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on("dialog", (d) => {
      record("dialog", `${d.type()}: ${d.message()}`);
      d.dismiss().catch(() => {});
    });

    const started = Date.now();
    await page.goto(config.url, { waitUntil: "load" });
    // The app is ready when GraphView has run app.setup() (window.app is set there) and the node
    // definitions from /object_info are registered.
    await page.waitForFunction(
      () => window.app?.rootGraph && window.app.canvas && window.LiteGraph?.registered_node_types?.EasyAnimateVideoSampler,
      null,
      { timeout: 90_000 },
    );
    await page.waitForLoadState("networkidle");
    results.startup.seconds = (Date.now() - started) / 1000;
    results.startup.extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
    results.startup.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
    // LiteGraph warns once per deprecated API; repeat them so one from the pack is not hidden behind
    // the same warning from the frontend's own code.
    await page.evaluate(() => (window.LiteGraph.alwaysRepeatWarnings = true));
    results.startup.state = await inspect(page);
    await collectPackConsole(page);
    await page.screenshot({ path: path.join(config.artifacts, "_startup.png") });
    save();

    for (const { name, file } of config.workflows) {
      phase = name;
      messages[name] = [];
      const result = (results.workflows[name] = {});
      const t0 = Date.now();
      try {
        const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
        result.workflow = workflow; // what was loaded, for the comparison (the file may change meanwhile)
        await page.evaluate((wf) => window.app.loadGraphData(wf, true, true, null), workflow);
        await page.waitForLoadState("networkidle");
        await nextFrames(page);
        await page.waitForTimeout(500); // let toasts, dialogs and image previews appear
        Object.assign(result, await inspect(page));
        result.layout = await layout(page);
        result.prompt = (await page.evaluate(() => window.app.graphToPrompt())).output;
        await page.screenshot({ path: path.join(config.artifacts, `${name}.png`) });
        const editorNode = result.nodes.find((n) => n.type === TRAJECTORY_NODE);
        if (editorNode) {
          result.trajectory = await drawTracks(page, editorNode.id, config.clicks);
          if (!result.trajectory.error) result.trajectory.checks = await editorChecks(page, editorNode.id);
          await page.screenshot({ path: path.join(config.artifacts, `${name}.trajectory.png`) });
        }
      } catch (e) {
        result.error = `${e.name}: ${e.message}\n${e.stack ?? ""}`;
      }
      await collectPackConsole(page).catch((e) => record("pack-error", `could not read the pack's console calls: ${e}`));
      result.seconds = (Date.now() - t0) / 1000;
      save();
    }
  } finally {
    save();
    await browser.close();
  }
}

main().catch((e) => {
  results.error = `${e.name}: ${e.message}\n${e.stack ?? ""}`;
  save();
  console.error(e);
  process.exit(1);
});
