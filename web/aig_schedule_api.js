// comfy-aig: client of the schedule routes (nodes/web_routes.py). The gamma formulas live in Python only;
// this module fetches the family vocabulary once and sampled curves on demand, cached by query.
import { getJson, reportError } from "./aig_util.js";

export const WINDOW_NAMES = ["window_start", "window_end"];
export const CURVE_POINTS = 101;
const CACHE_LIMIT = 256;

let familiesPromise = null;
let families = null; // {family: [parameter names]} once loaded
const curveCache = new Map(); // query string -> Promise<{ok, data | error}>

/** Start (once) loading {family: [parameter names]}; resolves to it, or to null on failure (logged). */
export function loadFamilies() {
  familiesPromise ??= getJson("/aig/schedule_families").then((answer) => {
    if (!answer.ok) {
      reportError(`schedule families unavailable: ${answer.error}`);
      return null;
    }
    families = answer.data;
    return families;
  });
  return familiesPromise;
}

/** The loaded vocabulary, or null while loading / after a failure. */
export function getFamilies() {
  return families;
}

/** Every family parameter name (the union of the families' lists). */
export function allParameterNames() {
  return families ? [...new Set(Object.values(families).flat())] : [];
}

/** URLSearchParams text of a schedule: the family, its own parameters, the window, steps and points. */
export function curveQuery(values) {
  const params = new URLSearchParams({ schedule: String(values.schedule) });
  for (const name of families?.[values.schedule] ?? []) {
    if (values[name] !== undefined) params.set(name, String(values[name]));
  }
  for (const name of WINDOW_NAMES) {
    if (values[name] !== undefined) params.set(name, String(values[name]));
  }
  if (values.steps !== undefined) params.set("steps", String(values.steps));
  params.set("points", String(CURVE_POINTS));
  return params.toString();
}

/** Cached GET /aig/schedule_curve?<query>; resolves to {ok, data: {describe, points, steps?}} or {ok: false, error}. */
export function fetchCurve(query) {
  let answer = curveCache.get(query);
  if (!answer) {
    answer = getJson(`/aig/schedule_curve?${query}`);
    curveCache.set(query, answer);
    if (curveCache.size > CACHE_LIMIT) curveCache.delete(curveCache.keys().next().value);
    // a failed request (network, server) is not cached, so the next change retries
    answer.then((result) => {
      if (!result.ok && !result.invalid) curveCache.delete(query);
    });
  }
  return answer;
}
