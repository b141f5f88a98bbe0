// comfy-aig frontend extension (entry point): colours the AIG node types and wires the feature modules:
// - aig_schedule_nodes.js: live gamma(s) plot and family-dependent widgets on the schedule nodes,
// - aig_text_output.js:    text results of every AIG node shown on the node after a run,
// - aig_score_overlay.js:  reward scores drawn on the image previews of Score / Rank Images,
// - aig_tuned_inputs.js:   tuned_model link and LoRA file made exclusive on AIG Guider / AIG Sampler,
// - aig_templates.js:      the pack's workflows listed 1, 2, 3... in the template browser.
// window.comfyAIG exposes the state for debugging and the browser tests (tests/aig_testkit/browser.py).
import { app } from "../../scripts/app.js";
import { getFamilies, loadFamilies } from "./aig_schedule_api.js";
import { patchScoreNodeType, SCORE_NODE_TYPES } from "./aig_score_overlay.js";
import {
  applyFamilyVisibility,
  CURVE_WIDGET_NAME,
  curveState,
  patchScheduleNodeType,
  refreshCurve,
  SCHEDULE_NODE_TYPES,
  setUpScheduleNode,
} from "./aig_schedule_nodes.js";
import { orderTemplateBrowser, packModuleName } from "./aig_templates.js";
import { patchTextOutputNodeType, TEXT_WIDGET_NAME } from "./aig_text_output.js";
import { applyTunedVisibility, patchTunedNodeType, TUNED_NODE_TYPES } from "./aig_tuned_inputs.js";
import { chainMethod, reportError } from "./aig_util.js";

const NODE_COLOUR = "#2a4d3a";
const NODE_BGCOLOUR = "#1f3a2c";

function isAIGNodeType(name) {
  return typeof name === "string" && name.startsWith("AIG");
}

window.comfyAIG = {
  ready: false, // true once the app has registered every node type (the extension's setup hook)
  families: getFamilies,
  curveState,
  refreshCurve, // compare a node's widgets with its plot now (the canvas does it on every frame)
  applyFamilyVisibility,
  applyTunedVisibility,
  widgetNames: { curve: CURVE_WIDGET_NAME, text: TEXT_WIDGET_NAME },
};

app.registerExtension({
  name: "comfy_aig.nodes",

  async init() {
    orderTemplateBrowser(packModuleName(import.meta.url));
    // awaited by the app before node types are registered, so every schedule node starts with the vocabulary
    await loadFamilies();
  },

  async setup() {
    window.comfyAIG.ready = true;
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isAIGNodeType(nodeData?.name)) return;
    // class-level colours: drawn by default, overridable per node, and never written into saved workflows
    nodeType.color = NODE_COLOUR;
    nodeType.bgcolor = NODE_BGCOLOUR;
    patchTextOutputNodeType(nodeType, chainMethod);
    if (SCHEDULE_NODE_TYPES.has(nodeData.name)) patchScheduleNodeType(nodeType, chainMethod);
    if (SCORE_NODE_TYPES.has(nodeData.name)) patchScoreNodeType(nodeType, chainMethod);
    if (TUNED_NODE_TYPES.has(nodeData.name)) patchTunedNodeType(nodeType, chainMethod);
  },

  nodeCreated(node) {
    if (SCHEDULE_NODE_TYPES.has(node.comfyClass)) {
      try {
        setUpScheduleNode(node);
      } catch (error) {
        reportError(`could not set up the gamma plot of node ${node.id} (${node.comfyClass})`, error);
      }
    }
  },
});
