// comfy-aig frontend helpers shared by the other modules: console reporting, callback chaining,
// JSON fetching from the pack's routes (nodes/web_routes.py) and small widget look-ups.
import { api } from "../../scripts/api.js";

const PREFIX = "[comfy-aig]";

/** Log an unexpected failure where a developer will see it (never swallow it silently). */
export function reportError(message, error) {
  console.error(`${PREFIX} ${message}`, error ?? "");
}

/** Log an expected, user-caused problem (an invalid schedule) once per distinct message. */
const warned = new Set();
export function reportWarning(message) {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(`${PREFIX} ${message}`);
}

/** Run `extra` after an object's existing method (prototype hooks are shared with other extensions). */
export function chainMethod(target, name, extra) {
  const original = target[name];
  target[name] = function (...args) {
    const result = original?.apply(this, args);
    try {
      extra.apply(this, args);
    } catch (error) {
      reportError(`${name} hook failed`, error);
    }
    return result;
  };
}

/**
 * GET a pack route; resolves to {ok: true, data} or {ok: false, error} where error is the route's own
 * message for a 400 answer, or a description of the network/server failure (also logged as an error).
 */
export async function getJson(path) {
  let response;
  try {
    response = await api.fetchApi(path, { cache: "no-store" });
  } catch (error) {
    reportError(`request ${path} failed`, error);
    return { ok: false, error: `could not reach the server (${error})` };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    reportError(`${path} answered ${response.status} without JSON`, error);
    return { ok: false, error: `server answered ${response.status} (not JSON)` };
  }
  if (response.ok) return { ok: true, data: body };
  if (response.status === 400 && body?.error) return { ok: false, error: body.error, invalid: true };
  reportError(`${path} answered ${response.status}`, body);
  return { ok: false, error: body?.error ?? `server answered ${response.status}` };
}

/** The widget of a node by name, or undefined. */
export function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** True when the input socket of a widget is driven by a link (its value is then not the widget's). */
export function isWidgetLinked(node, name) {
  const slot = node.inputs?.find((input) => input.widget?.name === name);
  return slot?.link != null;
}

const HIDDEN_SIZE = () => [0, -4]; // LiteGraph's convention: a widget that takes no vertical space

/** Hide or show one widget; returns true when it changed. Hidden widgets keep value and serialisation. */
export function setWidgetHidden(widget, hidden) {
  if (Boolean(widget.hidden) === hidden) return false;
  if (hidden) {
    widget.aigOwnComputeSize = Object.hasOwn(widget, "computeSize") ? widget.computeSize : null;
    widget.computeSize = HIDDEN_SIZE;
    widget.hidden = true;
  } else {
    if (widget.aigOwnComputeSize) widget.computeSize = widget.aigOwnComputeSize;
    else delete widget.computeSize;
    delete widget.aigOwnComputeSize;
    widget.hidden = false;
  }
  return true;
}

/** Ask LiteGraph to redraw the node's canvas. */
export function redraw(node) {
  node.setDirtyCanvas?.(true, true);
}
