// comfy-aig: live gamma(s) plot and family-dependent widgets on the schedule nodes
// (AIGGuider, AIGSampler, AIGSchedulePreview).
//
// - Only the chosen family's parameters are shown (p for power, switch for step, ...); the other
//   parameter widgets are hidden, never removed, so they keep their values and every saved workflow
//   keeps the same widgets_values. A parameter driven by a link always stays visible.
// - A canvas widget at the end of the node (not serialised) draws the curve sampled by the server
//   (GET /aig/schedule_curve), a dot per sampling step at progress i/steps, the window shaded, and the
//   route's error message in red for an invalid combination. Each frame compares the widget values with
//   the last request; a change is fetched after a short debounce and cached (aig_schedule_api.js).
import {
  WINDOW_NAMES,
  allParameterNames,
  curveQuery,
  fetchCurve,
  getFamilies,
} from "./aig_schedule_api.js";
import { findWidget, isWidgetLinked, redraw, reportWarning, setWidgetHidden } from "./aig_util.js";

export const SCHEDULE_NODE_TYPES = new Set(["AIGGuider", "AIGSampler", "AIGSchedulePreview"]);
export const CURVE_WIDGET_NAME = "aig_gamma_curve";
const DEBOUNCE_MS = 150;
const CURVE_MIN_HEIGHT = 150;

const COLOURS = {
  background: "#151a17",
  frame: "#4d5a52",
  window: "rgba(120, 200, 150, 0.16)",
  windowEdge: "rgba(120, 200, 150, 0.55)",
  curve: "#5fb0ff",
  dot: "#ff7a50",
  text: "#c8d2cc",
  muted: "#8a968f",
  error: "#ff5a5a",
};

// ---------------------------------------------------------------------------------------------
// State

/** Per-node state of the plot: the wanted query, the one drawn, its data or error. */
export function curveState(node) {
  node.aigCurve ??= { query: null, shown: null, data: null, error: null, linked: [], timer: null };
  return node.aigCurve;
}

/** Current schedule values of the node's widgets and the names that are driven by links instead. */
function readScheduleValues(node) {
  const families = getFamilies();
  const values = {};
  const linked = [];
  const family = findWidget(node, "schedule")?.value;
  const wanted = ["schedule", ...(families?.[family] ?? []), ...WINDOW_NAMES];
  for (const name of wanted) {
    const widget = findWidget(node, name);
    if (!widget) continue; // the window is optional: ComfyUI then uses the defaults, and so does the route
    if (isWidgetLinked(node, name)) linked.push(name);
    else values[name] = widget.value;
  }
  const steps = findWidget(node, "steps");
  if (steps && !isWidgetLinked(node, "steps")) values.steps = steps.value;
  return { values, linked };
}

// ---------------------------------------------------------------------------------------------
// Family-dependent widgets

/** Show exactly the chosen family's parameters (plus linked ones); returns true when anything changed. */
export function applyFamilyVisibility(node) {
  const families = getFamilies();
  if (!families) return false; // vocabulary unavailable (logged): leave every widget visible
  const family = findWidget(node, "schedule")?.value;
  const own = families[family] ?? allParameterNames(); // unknown family: show all, the route reports it
  let changed = false;
  for (const name of allParameterNames()) {
    const widget = findWidget(node, name);
    if (!widget) continue;
    const visible = own.includes(name) || isWidgetLinked(node, name);
    changed = setWidgetHidden(widget, !visible) || changed;
  }
  if (changed) redraw(node);
  return changed;
}

// ---------------------------------------------------------------------------------------------
// Fetching

/** Compare the widgets with the last request and, on a change, fetch the curve after a debounce. */
export function refreshCurve(node) {
  const state = curveState(node);
  if (!getFamilies()) return;
  const { values, linked } = readScheduleValues(node);
  state.linked = linked;
  if (linked.length) return;
  const query = curveQuery(values);
  if (query === state.query) return;
  state.query = query;
  clearTimeout(state.timer);
  state.timer = setTimeout(() => requestCurve(node, query), DEBOUNCE_MS);
}

async function requestCurve(node, query) {
  const state = curveState(node);
  const answer = await fetchCurve(query);
  if (state.query !== query) return; // a newer change is on its way
  state.shown = query;
  state.data = answer.ok ? answer.data : null;
  state.error = answer.ok ? null : answer.error;
  if (answer.invalid) reportWarning(`node ${node.id} (${node.type}): ${answer.error}`);
  redraw(node);
}

// ---------------------------------------------------------------------------------------------
// Drawing

function wrapText(ctx, text, maxWidth) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(candidate).width > maxWidth) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

function drawMessage(ctx, box, text, colour) {
  ctx.fillStyle = colour;
  ctx.font = "12px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  const lines = wrapText(ctx, text, box.w - 16);
  lines.forEach((line, i) => ctx.fillText(line, box.x + 8, box.y + 8 + i * 15));
}

function drawPlot(ctx, box, data, query) {
  const params = new URLSearchParams(query);
  const plot = { x: box.x + 26, y: box.y + 20, w: box.w - 36, h: box.h - 38 };
  const toX = (s) => plot.x + s * plot.w;
  const toY = (g) => plot.y + (1 - g) * plot.h;

  const start = Number(params.get("window_start") ?? 0);
  const end = Number(params.get("window_end") ?? 1);
  ctx.fillStyle = COLOURS.window;
  ctx.fillRect(toX(start), plot.y, toX(end) - toX(start), plot.h);
  ctx.strokeStyle = COLOURS.windowEdge;
  ctx.lineWidth = 1;
  ctx.setLineDash([3, 3]);
  for (const s of [start, end]) {
    ctx.beginPath();
    ctx.moveTo(toX(s), plot.y);
    ctx.lineTo(toX(s), plot.y + plot.h);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.strokeStyle = COLOURS.frame;
  ctx.strokeRect(plot.x, plot.y, plot.w, plot.h);

  ctx.strokeStyle = COLOURS.curve;
  ctx.lineWidth = 2;
  ctx.beginPath();
  data.points.forEach(([s, g], i) => (i ? ctx.lineTo(toX(s), toY(g)) : ctx.moveTo(toX(s), toY(g))));
  ctx.stroke();

  ctx.fillStyle = COLOURS.dot;
  const radius = (data.steps?.length ?? 0) > 60 ? 1.5 : 3;
  for (const [s, g] of data.steps ?? []) {
    ctx.beginPath();
    ctx.arc(toX(s), toY(g), radius, 0, 2 * Math.PI);
    ctx.fill();
  }

  ctx.font = "11px sans-serif";
  ctx.textBaseline = "top";
  ctx.fillStyle = COLOURS.text;
  ctx.textAlign = "left";
  ctx.fillText(`γ(s) = ${data.describe}`, plot.x, box.y + 4);
  ctx.fillStyle = COLOURS.muted;
  ctx.fillText("1", box.x + 10, plot.y - 5);
  ctx.fillText("0", box.x + 10, plot.y + plot.h - 6);
  ctx.fillText("noise", plot.x, plot.y + plot.h + 3);
  ctx.textAlign = "right";
  ctx.fillText("clean  (progress s)", plot.x + plot.w, plot.y + plot.h + 3);
  if (data.steps) ctx.fillText(`${data.steps.length} steps`, plot.x + plot.w, box.y + 4);
}

function drawCurveWidget(ctx, node, width, y) {
  const state = curveState(node);
  const height = (this.computedHeight ?? CURVE_MIN_HEIGHT) - 6;
  const box = { x: 10, y: y + 2, w: width - 20, h: height };
  ctx.save();
  ctx.fillStyle = COLOURS.background;
  ctx.beginPath();
  ctx.roundRect(box.x, box.y, box.w, box.h, 6);
  ctx.fill();
  if (state.linked.length) {
    drawMessage(ctx, box, `γ(s) depends on linked input(s): ${state.linked.join(", ")}`, COLOURS.muted);
  } else if (!getFamilies()) {
    drawMessage(ctx, box, "schedule vocabulary unavailable (see the browser console)", COLOURS.error);
  } else if (state.error) {
    drawMessage(ctx, box, state.error, COLOURS.error);
  } else if (state.data) {
    drawPlot(ctx, box, state.data, state.shown);
  } else {
    drawMessage(ctx, box, "loading γ(s)…", COLOURS.muted);
  }
  ctx.restore();
}

/** Append the (non-serialised) curve widget to a schedule node. */
export function addCurveWidget(node) {
  if (findWidget(node, CURVE_WIDGET_NAME)) return;
  node.addCustomWidget({
    name: CURVE_WIDGET_NAME,
    type: CURVE_WIDGET_NAME,
    value: "",
    y: 0,
    serialize: false,
    options: { serialize: false },
    draw: drawCurveWidget,
    computeLayoutSize: () => ({ minHeight: CURVE_MIN_HEIGHT, minWidth: 200 }),
  });
}

/** Node-type hooks: keep widgets and plot in step with the values on every frame and on (re)connection. */
export function patchScheduleNodeType(nodeType, chainMethod) {
  chainMethod(nodeType.prototype, "onDrawForeground", function () {
    // runs before LiteGraph lays out and draws the widgets, so a visibility change applies this frame
    applyFamilyVisibility(this);
    refreshCurve(this);
  });
  chainMethod(nodeType.prototype, "onConfigure", function () {
    applyFamilyVisibility(this);
    refreshCurve(this); // loaded nodes fetch their plot even before they are first drawn
  });
  chainMethod(nodeType.prototype, "onConnectionsChange", function () {
    applyFamilyVisibility(this);
  });
}

/** A freshly created schedule node: curve widget, visibility, and a size that fits both. */
export function setUpScheduleNode(node) {
  addCurveWidget(node);
  applyFamilyVisibility(node);
  const fitted = node.computeSize();
  node.setSize([Math.max(node.size[0], fitted[0]), fitted[1]]);
  refreshCurve(node);
}
