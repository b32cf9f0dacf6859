// Trajectory editor for the EasyAnimateTrajectory node.
//
// Click over the reference image to place the control points of a track; each track becomes a smooth
// Catmull-Rom curve resampled to one point per frame and written as JSON into the node's `tracks_json`
// widget (what the node reads, and what saved workflows keep). The control points themselves live in
// node.properties.easyanimate_trajectory_points, so re-opening a workflow restores the editable curves.
//
// Mouse: click adds a point to the current track, drag moves a point, right-click deletes one.
// Keys (with the editor focused): N new track, Z or Backspace undo; with Ctrl, Alt or Meta they are ComfyUI's
// (Ctrl+Z undoes the last change in ComfyUI's history, which records every change made here).
// tracks_json edited by hand wins: the control points give way (Undo brings them back) and the editor shows it.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { HINT_PX, TOOLBAR_PX, addStyleOnce, drawTrajectories, parseImportedTracks } from "./trajectory_draw.js";
import { trackFromControlPoints, tracksToJSON } from "./trajectory_math.js";

const NODE_NAME = "EasyAnimateTrajectory";
const POINTS_PROPERTY = "easyanimate_trajectory_points";
const HIT_RADIUS_PX = 9; // screen pixels within which a click grabs an existing point
const HISTORY_LIMIT = 100;
const MAX_BUFFER_PX = 4096; // the canvas buffer's longest side, whatever the zoom
/** Call `callback` after the original method (if any), keeping its return value. */
function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

function cleanTracks(value) {
  if (!Array.isArray(value)) return [[]];
  const tracks = value
    .filter(Array.isArray)
    .map((t) => t.filter((p) => Number.isFinite(p?.x) && Number.isFinite(p?.y)).map((p) => ({ x: p.x, y: p.y })));
  return tracks.length ? tracks : [[]];
}

class TrajectoryEditor {
  constructor(node) {
    this.node = node;
    this.tracks = [[]]; // control points per track, reference pixels
    this.current = 0;
    this.history = [];
    this.drag = null; // {track, index} while dragging a point
    this.image = null; // HTMLImageElement shown under the tracks

    addStyleOnce();
    this.element = document.createElement("div");
    this.element.className = "easyanimate-trajectory";
    const toolbar = document.createElement("div");
    toolbar.className = "toolbar";
    this.button(toolbar, "New track", "Start another track (N)", () => this.newTrack());
    this.button(toolbar, "Undo", "Undo the last change (Z)", () => this.undo());
    this.button(toolbar, "Clear", "Remove every track", () => this.clear());
    this.matchButton = this.button(toolbar, "Use image size", "Set ref_width/ref_height to the image", () =>
      this.matchImageSize(),
    );
    this.status = document.createElement("span");
    this.status.className = "status";
    toolbar.appendChild(this.status);

    this.stage = document.createElement("div");
    this.stage.className = "stage";
    this.canvas = document.createElement("canvas");
    this.canvas.tabIndex = 0;
    this.stage.appendChild(this.canvas);
    this.ctx = this.canvas.getContext("2d");

    const hint = document.createElement("div");
    hint.className = "hint";
    hint.textContent = "click: add point · drag: move · right-click: delete · N: new track · Z: undo";
    this.element.append(toolbar, this.stage, hint);

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointerenter", () => {
      this.refreshImage();
      this.sharpen();
    });
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    this.canvas.addEventListener("keydown", (e) => this.onKey(e));
    this.resizeObserver = new ResizeObserver(() => this.redraw()); // a new size needs a new buffer
    this.resizeObserver.observe(this.stage);
  }

  button(parent, label, title, onClick) {
    const b = document.createElement("button");
    b.textContent = label;
    b.title = title;
    b.addEventListener("click", (e) => {
      e.stopPropagation();
      onClick();
    });
    parent.appendChild(b);
    return b;
  }

  widget(name) {
    return this.node.widgets?.find((w) => w.name === name);
  }

  refSize() {
    const w = Math.max(1, Math.round(Number(this.widget("ref_width")?.value) || 512));
    const h = Math.max(1, Math.round(Number(this.widget("ref_height")?.value) || 512));
    return { w, h };
  }

  frames() {
    return Math.max(1, Math.round(Number(this.widget("frames")?.value) || 49));
  }

  // ---- state -------------------------------------------------------------------------------------

  load() {
    this.tracks = cleanTracks(this.node.properties?.[POINTS_PROPERTY]);
    this.current = this.tracks.length - 1;
    this.history = [];
    this.size = this.refSize();
    this.written = this.sampledJSON(); // what these points write; a saved tracks_json edited by hand differs
    this.followJSON();
    this.redraw();
  }

  /** The tracks_json text of the control points at the current size and frame count. */
  sampledJSON() {
    const { w, h } = this.refSize();
    const frames = this.frames();
    return tracksToJSON(this.tracks.filter((t) => t.length).map((t) => trackFromControlPoints(t, frames, w, h)));
  }

  storePoints() {
    this.node.properties ??= {};
    this.node.properties[POINTS_PROPERTY] = this.tracks.map((t) => t.map((p) => ({ x: p.x, y: p.y })));
  }

  /** tracks_json no longer holds what the editor wrote (edited by hand): drop the control points, so the editor
   * shows what will run and does not overwrite it later. Undo brings them back. Returns whether it did. */
  followJSON() {
    const json = this.widget("tracks_json");
    if (!json || json.value === this.written || !this.tracks.some((t) => t.length)) return false;
    this.remember();
    this.tracks = [[]];
    this.current = 0;
    this.storePoints();
    return true;
  }

  /** tracks_json's own callback (typing in it, or a value set by the editor). */
  onJSONChanged() {
    this.followJSON();
    this.redraw();
  }

  remember() {
    this.history.push(JSON.stringify(this.tracks));
    if (this.history.length > HISTORY_LIMIT) this.history.shift();
  }

  /** Store the control points and write the per-frame tracks into tracks_json. */
  commit() {
    // a change ComfyUI's history (its Ctrl+Z) records: it takes the graph's state after the last after-change
    app.canvas?.emitBeforeChange?.();
    try {
      this.storePoints();
      this.written = this.sampledJSON();
      const json = this.widget("tracks_json");
      if (json) {
        json.value = this.written;
        json.callback?.(json.value);
      }
      this.redraw();
      this.node.setDirtyCanvas?.(true, true);
    } finally {
      app.canvas?.emitAfterChange?.();
    }
  }

  newTrack() {
    if (!this.tracks[this.current]?.length) return; // the current track is still empty
    this.remember();
    this.tracks.push([]);
    this.current = this.tracks.length - 1;
    this.redraw();
  }

  undo() {
    const last = this.history.pop();
    if (last === undefined) return;
    this.tracks = cleanTracks(JSON.parse(last));
    this.current = this.tracks.length - 1;
    this.commit();
  }

  clear() {
    this.remember();
    this.tracks = [[]];
    this.current = 0;
    this.commit();
  }

  /** ref_width, ref_height or frames changed: re-sample the drawn tracks (pasted tracks_json is left alone). */
  onSettingsChanged() {
    this.followJSON();
    // a new reference size keeps the points where they are on the (stretched) reference image, Undo's too
    const { w, h } = this.refSize();
    const old = this.size ?? { w, h };
    if (old.w !== w || old.h !== h) {
      const scale = (tracks) => tracks.map((t) => t.map((p) => ({ x: (p.x * w) / old.w, y: (p.y * h) / old.h })));
      this.tracks = scale(this.tracks);
      this.history = this.history.map((state) => JSON.stringify(scale(JSON.parse(state))));
    }
    this.size = { w, h };
    if (this.tracks.some((t) => t.length)) this.commit();
    else this.redraw();
  }

  matchImageSize() {
    if (!this.image?.naturalWidth) return;
    for (const [name, value] of [
      ["ref_width", this.image.naturalWidth],
      ["ref_height", this.image.naturalHeight],
    ]) {
      const w = this.widget(name);
      if (w) {
        w.value = value;
        w.callback?.(value);
      }
    }
    this.onSettingsChanged();
  }

  // ---- reference image ---------------------------------------------------------------------------

  setImageSource(src) {
    const img = new Image();
    img.onload = () => {
      this.image = img;
      this.redraw();
    };
    img.src = src;
  }

  /** After a run the node sends its reference image back as a temp file: ui {"bg_image": [{filename, subfolder, type}]}. */
  onExecuted(message) {
    const file = message?.bg_image?.[0];
    if (file?.filename) {
      const q = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type ?? "temp" });
      this.setImageSource(api.apiURL(`/view?${q}`));
    }
  }

  /** Before any run, show the image of a Load Image node wired into reference_image. */
  refreshImage() {
    const slot = this.node.findInputSlot?.("reference_image") ?? -1;
    if (slot < 0 || !this.node.isInputConnected?.(slot)) return;
    const link = this.node.getInputLink?.(slot);
    const origin = link && this.node.graph?.getNodeById?.(link.origin_id);
    const img = origin?.imgs?.[0];
    if (img && img !== this.image && img.complete && img.naturalWidth) {
      this.image = img;
      this.redraw();
    }
  }

  // ---- input -------------------------------------------------------------------------------------

  /** Event -> reference-pixel coordinates (the canvas may be scaled by CSS and by the graph zoom). */
  toRef(e) {
    const c = this.canvas;
    const rect = c.getBoundingClientRect(); // the border box, on screen
    const zoom = c.offsetWidth ? rect.width / c.offsetWidth : 1; // offsetWidth is the same box before the zoom
    const bx = (c.clientLeft || 0) * zoom; // the picture starts inside the canvas's border
    const by = (c.clientTop || 0) * zoom;
    const width = rect.width - 2 * bx;
    const height = rect.height - 2 * by;
    const { w, h } = this.refSize();
    const x = ((e.clientX - rect.left - bx) / width) * w;
    const y = ((e.clientY - rect.top - by) / height) * h;
    return { x: Math.min(w, Math.max(0, x)), y: Math.min(h, Math.max(0, y)), perPx: w / width };
  }

  hit(p) {
    const radius = HIT_RADIUS_PX * p.perPx;
    let best = null;
    this.tracks.forEach((track, t) =>
      track.forEach((q, i) => {
        const d = Math.hypot(q.x - p.x, q.y - p.y);
        if (d <= radius && (!best || d < best.d)) best = { track: t, index: i, d };
      }),
    );
    return best;
  }

  onPointerDown(e) {
    e.preventDefault();
    e.stopPropagation();
    this.canvas.focus();
    const p = this.toRef(e);
    const target = this.hit(p);
    if (e.button === 2) {
      if (!target) return;
      this.remember();
      this.tracks[target.track].splice(target.index, 1);
      if (!this.tracks[target.track].length && this.tracks.length > 1) this.tracks.splice(target.track, 1);
      this.current = Math.min(this.current, this.tracks.length - 1);
      this.commit();
      return;
    }
    if (e.button !== 0) return;
    this.remember();
    if (target) {
      this.drag = target;
      this.current = target.track;
      this.canvas.setPointerCapture(e.pointerId);
      this.redraw();
      return;
    }
    this.tracks[this.current].push({ x: p.x, y: p.y });
    this.commit();
  }

  onPointerMove(e) {
    if (!this.drag) return;
    e.stopPropagation();
    const p = this.toRef(e);
    this.tracks[this.drag.track][this.drag.index] = { x: p.x, y: p.y };
    this.redraw();
  }

  onPointerUp(e) {
    if (!this.drag) return;
    e.stopPropagation();
    this.drag = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    this.commit();
  }

  onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return; // ComfyUI's shortcuts (Ctrl+Z, Ctrl+Shift+Z, Ctrl+C...)
    const key = e.key.toLowerCase();
    if (key === "n") this.newTrack();
    else if (key === "z" || key === "backspace" || key === "delete") this.undo();
    else return;
    e.preventDefault();
    e.stopPropagation(); // keep ComfyUI's own shortcuts out of the editor
  }

  // ---- drawing -----------------------------------------------------------------------------------

  /** Fit the canvas inside the stage, keeping the reference aspect ratio; its size in CSS px, or null
   * while the stage is not laid out. */
  fit() {
    const { w, h } = this.refSize();
    const scale = Math.min(this.stage.clientWidth / w, this.stage.clientHeight / h);
    if (!(scale > 0)) return null;
    const size = { width: Math.max(1, Math.floor(w * scale)), height: Math.max(1, Math.floor(h * scale)) };
    this.canvas.style.width = `${size.width}px`;
    this.canvas.style.height = `${size.height}px`;
    return size;
  }

  /** Device pixels per CSS pixel of the canvas now: devicePixelRatio x the graph's zoom (a CSS transform). */
  screenDensity() {
    const rect = this.canvas.getBoundingClientRect?.();
    const zoom = rect?.width > 0 && this.canvas.offsetWidth ? rect.width / this.canvas.offsetWidth : 1;
    return (globalThis.devicePixelRatio || 1) * zoom;
  }

  /** Zooming the graph resizes nothing that can be observed: redraw for the new zoom when the pointer comes. */
  sharpen() {
    if (Math.abs(this.screenDensity() - (this.density ?? 0)) > 0.01) this.redraw();
  }

  /** Size the canvas buffer to the device pixels it covers (CSS size x devicePixelRatio x the graph's zoom),
   * so the picture stays sharp on high-DPI screens and when zoomed in; before layout it is the reference
   * size. Returns the reference pixels per CSS pixel, the unit for line widths. */
  sizeBuffer(w, h) {
    const fitted = this.fit();
    // the picture's box as laid out (inside the border; the stage may squeeze it by a pixel or two)
    const css = fitted && { width: this.canvas.clientWidth || fitted.width, height: this.canvas.clientHeight || fitted.height };
    const density = (this.density = css ? this.screenDensity() : 1);
    const bw = css ? Math.max(1, Math.min(MAX_BUFFER_PX, Math.round(css.width * density))) : w;
    const bh = css ? Math.max(1, Math.min(MAX_BUFFER_PX, Math.round(css.height * density))) : h;
    if (this.canvas.width !== bw || this.canvas.height !== bh) {
      this.canvas.width = bw;
      this.canvas.height = bh;
    }
    this.ctx.setTransform(bw / w, 0, 0, bh / h, 0, 0); // draw in reference pixels
    return css ? w / css.width : Math.max(1, Math.max(w, h) / 300);
  }

  /** Height the widget asks for at the node's current width. */
  preferredHeight() {
    const { w, h } = this.refSize();
    const width = Math.max(200, (this.node.size?.[0] ?? 400) - 20);
    return TOOLBAR_PX + HINT_PX + Math.min(800, Math.max(120, (width * h) / w)) + 8;
  }

  redraw() {
    const { w, h } = this.refSize();
    const unit = this.sizeBuffer(w, h);
    const frames = this.frames();
    const editable = this.tracks.some((t) => t.length);
    const curves = editable
      ? this.tracks.map((t) => trackFromControlPoints(t, frames, w, h))
      : parseImportedTracks(this.widget("tracks_json")?.value);
    drawTrajectories(this.ctx, {
      w, h, unit, image: this.image, curves, editable, tracks: this.tracks, current: this.current,
    });

    const count = this.tracks.filter((t) => t.length).length;
    this.status.textContent = editable
      ? `track ${this.current + 1}/${this.tracks.length} · ${count} drawn · ${frames} frames · ${w}×${h}`
      : curves.length
        ? `${curves.length} track(s) from tracks_json (drawing replaces them)`
        : `${w}×${h} · click to add points`;
    this.matchButton.style.display = this.image?.naturalWidth ? "" : "none";
  }
}

app.registerExtension({
  name: "EasyAnimate.TrajectoryEditor",
  async beforeRegisterNodeDef(nodeType, nodeData, app) {
    if (nodeData?.name !== NODE_NAME) return;

    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      const editor = new TrajectoryEditor(this);
      this.trajectoryEditor = editor;
      const widget = this.addDOMWidget("trajectory_editor", "easyanimate_trajectory", editor.element, {
        serialize: false,
        hideOnZoom: false,
        getValue: () => undefined,
        setValue: () => {},
        getMinHeight: () => TOOLBAR_PX + HINT_PX + 120,
        getHeight: () => editor.preferredHeight(),
      });
      widget.serialize = false;
      if (!widget.computeLayoutSize) widget.computeSize = (width) => [width, editor.preferredHeight()]; // older frontends

      for (const name of ["ref_width", "ref_height", "frames"]) {
        const w = editor.widget(name);
        if (w) chainCallback(w, "callback", () => editor.onSettingsChanged());
      }
      const json = editor.widget("tracks_json");
      if (json) chainCallback(json, "callback", () => editor.onJSONChanged());
      editor.load();
      this.setSize([Math.max(this.size[0], 420), this.computeSize()[1]]);
    });

    // A loaded workflow brings its control points in node.properties (configure runs after creation).
    chainCallback(nodeType.prototype, "onConfigure", function () {
      this.trajectoryEditor?.load();
    });

    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      this.trajectoryEditor?.onExecuted(message);
    });

    chainCallback(nodeType.prototype, "onConnectionsChange", function () {
      const editor = this.trajectoryEditor;
      if (!editor) return;
      const slot = this.findInputSlot?.("reference_image") ?? -1;
      if (slot < 0 || !this.isInputConnected?.(slot)) editor.image = null;
      editor.refreshImage();
      editor.redraw();
    });

    chainCallback(nodeType.prototype, "onRemoved", function () {
      this.trajectoryEditor?.resizeObserver.disconnect();
    });
  },
});
