// Template browser order: ComfyUI serves a pack's workflows in file-system order (app/custom_node_manager.py
// globs them unsorted) and frontend 1.27 shows them as served, so "6 AIG on SDXL" could come first. The pack's
// own list is put in the order of the numbers its file names start with; other packs' lists are untouched.
import { api } from "../../scripts/api.js";

/** The folder name ComfyUI serves this pack under: /extensions/<module>/aig_templates.js. */
export function packModuleName(moduleUrl) {
  const parts = new URL(moduleUrl).pathname.split("/");
  const at = parts.indexOf("extensions");
  return at >= 0 && parts[at + 1] ? decodeURIComponent(parts[at + 1]) : null;
}

/** {module: [names]} with `moduleName`'s names in natural order ("2 ..." before "10 ..."), keys kept in place. */
export function orderPackTemplates(templates, moduleName) {
  const ours = templates?.[moduleName];
  if (!Array.isArray(ours)) return templates;
  const sorted = [...ours].sort((a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" }));
  return { ...templates, [moduleName]: sorted };
}

/** Wrap api.getWorkflowTemplates (called when the template browser first opens) to order the pack's list. */
export function orderTemplateBrowser(moduleName) {
  if (!moduleName || typeof api.getWorkflowTemplates !== "function") return;
  const original = api.getWorkflowTemplates;
  api.getWorkflowTemplates = async function (...args) {
    return orderPackTemplates(await original.apply(this, args), moduleName);
  };
}
