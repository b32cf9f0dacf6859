// Spline and resampling maths of the EasyAnimate trajectory editor.
//
// Pure functions, no DOM, no ComfyUI: the editor imports them, and tests run them under node.
// Points are {x, y} objects in pixels of the reference frame.

const KNOT_EPSILON = 1e-6;

function distance(a, b) {
  return Math.hypot(b.x - a.x, b.y - a.y);
}

function lerp(a, b, wa, wb) {
  return { x: a.x * wa + b.x * wb, y: a.y * wa + b.y * wb };
}

/** Control points without consecutive duplicates (a zero-length knot interval has no direction). */
export function dedupe(points) {
  const out = [];
  for (const p of points) {
    if (!out.length || distance(out[out.length - 1], p) > KNOT_EPSILON) out.push({ x: p.x, y: p.y });
  }
  return out;
}

/**
 * A centripetal Catmull-Rom spline (alpha = 0.5) through every control point, as a dense polyline.
 *
 * Each segment P1 -> P2 uses its neighbours P0 and P3; the ends get mirrored phantom points
 * (P_-1 = 2 P0 - P1), so the curve starts and stops exactly on the first and last control points.
 * The segment is evaluated with the Barry-Goldman pyramid over knots spaced by |Pi+1 - Pi|^alpha,
 * which avoids the cusps and loops of the uniform variant.
 */
export function catmullRom(points, samplesPerSegment = 32, alpha = 0.5) {
  const pts = dedupe(points);
  if (pts.length < 2) return pts;
  const n = pts.length;
  const ext = [lerp(pts[0], pts[1], 2, -1), ...pts, lerp(pts[n - 1], pts[n - 2], 2, -1)];
  const out = [{ ...pts[0] }];
  for (let s = 0; s < n - 1; s++) {
    const [p0, p1, p2, p3] = ext.slice(s, s + 4);
    const t0 = 0;
    const t1 = t0 + Math.max(distance(p0, p1) ** alpha, KNOT_EPSILON);
    const t2 = t1 + Math.max(distance(p1, p2) ** alpha, KNOT_EPSILON);
    const t3 = t2 + Math.max(distance(p2, p3) ** alpha, KNOT_EPSILON);
    for (let k = 1; k <= samplesPerSegment; k++) {
      const t = t1 + ((t2 - t1) * k) / samplesPerSegment;
      const a1 = lerp(p0, p1, (t1 - t) / (t1 - t0), (t - t0) / (t1 - t0));
      const a2 = lerp(p1, p2, (t2 - t) / (t2 - t1), (t - t1) / (t2 - t1));
      const a3 = lerp(p2, p3, (t3 - t) / (t3 - t2), (t - t2) / (t3 - t2));
      const b1 = lerp(a1, a2, (t2 - t) / (t2 - t0), (t - t0) / (t2 - t0));
      const b2 = lerp(a2, a3, (t3 - t) / (t3 - t1), (t - t1) / (t3 - t1));
      out.push(lerp(b1, b2, (t2 - t) / (t2 - t1), (t - t1) / (t2 - t1)));
    }
    out[out.length - 1] = { ...p2 }; // land exactly on the control point
  }
  return out;
}

/** `count` points evenly spaced along the polyline's arc length, the first and last on its ends. */
export function resampleByArcLength(polyline, count) {
  if (!polyline.length || count < 1) return [];
  if (count === 1) return [{ ...polyline[0] }];
  const cumulative = [0];
  for (let i = 1; i < polyline.length; i++) {
    cumulative.push(cumulative[i - 1] + distance(polyline[i - 1], polyline[i]));
  }
  const total = cumulative[cumulative.length - 1];
  if (total <= KNOT_EPSILON) return Array.from({ length: count }, () => ({ ...polyline[0] }));
  const out = [];
  let seg = 1;
  for (let k = 0; k < count; k++) {
    const target = (total * k) / (count - 1);
    while (seg < polyline.length - 1 && cumulative[seg] < target) seg++;
    const span = cumulative[seg] - cumulative[seg - 1];
    const f = span > 0 ? Math.min(1, Math.max(0, (target - cumulative[seg - 1]) / span)) : 0;
    out.push(lerp(polyline[seg - 1], polyline[seg], 1 - f, f));
  }
  out[count - 1] = { ...polyline[polyline.length - 1] };
  return out;
}

/**
 * Control points -> one point per frame: the Catmull-Rom curve through them, resampled evenly along
 * its length to `frames` points and kept inside the `width` x `height` frame (the spline may overshoot).
 * A single control point is a point that stays still.
 */
export function trackFromControlPoints(controlPoints, frames, width = Infinity, height = Infinity) {
  if (!controlPoints.length || frames < 1) return [];
  const curve = catmullRom(controlPoints);
  const clamp = (v, hi) => Math.min(hi, Math.max(0, v));
  return resampleByArcLength(curve, frames).map((p) => ({ x: clamp(p.x, width), y: clamp(p.y, height) }));
}

/** Tracks (lists of {x, y}) -> the tracks_json text the EasyAnimateTrajectory node reads. */
export function tracksToJSON(tracks, decimals = 2) {
  const scale = 10 ** decimals;
  const round = (v) => Math.round(v * scale) / scale;
  return JSON.stringify(tracks.map((t) => t.map((p) => ({ x: round(p.x), y: round(p.y) }))));
}
