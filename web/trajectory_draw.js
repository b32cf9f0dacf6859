/**
 * Look of the trajectory editor (web/trajectory_editor.js): its style sheet, and the drawing of the reference
 * picture, every track's per-frame curve and its control points on a 2D canvas context in reference-image
 * pixels. No ComfyUI imports (ComfyUI loads this file as an extension too, which does nothing).
 */

export const TOOLBAR_PX = 30;
export const HINT_PX = 18;

const STYLE = `
.easyanimate-trajectory { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%;
  box-sizing: border-box; font: 11px sans-serif; color: var(--input-text, #ddd); }
.easyanimate-trajectory .toolbar { display: flex; gap: 4px; align-items: center; height: ${TOOLBAR_PX - 4}px; }
.easyanimate-trajectory button { background: var(--comfy-input-bg, #222); color: inherit; cursor: pointer;
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 2px 8px; font: inherit; }
.easyanimate-trajectory .status { margin-left: auto; opacity: 0.8; white-space: nowrap; }
.easyanimate-trajectory .stage { flex: 1; min-height: 0; display: flex; align-items: center;
  justify-content: center; overflow: hidden; }
.easyanimate-trajectory canvas { cursor: crosshair; outline: none; border: 1px solid var(--border-color, #555); }
.easyanimate-trajectory .hint { height: ${HINT_PX}px; opacity: 0.6; overflow: hidden; white-space: nowrap; }
`;

/** Add the editor's style sheet to the page (once). */
export function addStyleOnce() {
  if (document.getElementById("easyanimate-trajectory-style")) return;
  const style = document.createElement("style");
  style.id = "easyanimate-trajectory-style";
  style.textContent = STYLE;
  document.head.appendChild(style);
}

export const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]; // as the Python preview

/** JSON, else JSON with Python's quotes (as the node reads it), repeated for JSON inside a JSON string. */
function decode(value) {
  for (let i = 0; i < 4 && typeof value === "string"; i++) {
    try {
      value = JSON.parse(value);
    } catch {
      value = JSON.parse(value.replaceAll("'", '"'));
    }
  }
  return value;
}

const isPoint = (p) =>
  Array.isArray(p) ? p.length === 2 && (p[0] === null || typeof p[0] !== "object") : p !== null && typeof p === "object" && "x" in p && "y" in p;

/**
 * Tracks from a tracks_json value written elsewhere (e.g. pasted KJNodes coordinates), in the forms the node
 * reads (easyanimate_core/trajectory.py parse_tracks): a list of tracks of {x, y} or [x, y] points, one track
 * or one point, JSON inside a JSON string, a list of JSON strings (one per track), Python quotes. Shown, not
 * editable; points without finite x and y are dropped, and input the node cannot read is no tracks.
 */
export function parseImportedTracks(value) {
  try {
    let data = decode(value || "[]");
    if (Array.isArray(data) && data.length && data.every((t) => typeof t === "string")) data = data.map(decode);
    if (Array.isArray(data) ? data.length && isPoint(data[0]) : isPoint(data)) data = Array.isArray(data) ? [data] : [[data]];
    if (!Array.isArray(data)) return [];
    return data
      .filter(Array.isArray)
      .map((t) => t.filter(isPoint).map((p) => (Array.isArray(p) ? { x: p[0], y: p[1] } : { x: p.x, y: p.y })))
      .map((t) => t.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  } catch {
    return [];
  }
}

/**
 * Paint one frame of the editor. `curves`: per track, its point in every generated frame; `tracks`: the
 * control points (drawn as rings, the `current` track's in white); `editable` false draws dashed curves;
 * `unit`: reference pixels per screen (CSS) pixel, so lines and dots keep one on-screen size at any reference
 * size (without it they scale with the reference size).
 */
export function drawTrajectories(ctx, { w, h, unit, image, curves, editable, tracks, current }) {
  unit = unit > 0 ? unit : Math.max(1, Math.max(w, h) / 300);
  ctx.fillStyle = "#808080";
  ctx.fillRect(0, 0, w, h);
  if (image) ctx.drawImage(image, 0, 0, w, h);

  curves.forEach((curve, t) => {
    if (!curve.length) return;
    const colour = COLOURS[t % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 2 * unit;
    ctx.setLineDash(editable ? [] : [6 * unit, 4 * unit]);
    ctx.beginPath();
    curve.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    ctx.stroke();
    for (const p of curve) ctx.fillRect(p.x - unit, p.y - unit, 2 * unit, 2 * unit); // one dot per frame
    ctx.beginPath();
    ctx.arc(curve[0].x, curve[0].y, 4 * unit, 0, 2 * Math.PI); // start
    ctx.fill();
  });
  ctx.setLineDash([]);

  tracks.forEach((track, t) => {
    ctx.strokeStyle = t === current ? "#ffffff" : COLOURS[t % COLOURS.length];
    ctx.lineWidth = (t === current ? 2 : 1.5) * unit;
    for (const p of track) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, 6 * unit, 0, 2 * Math.PI);
      ctx.stroke();
    }
  });
}
