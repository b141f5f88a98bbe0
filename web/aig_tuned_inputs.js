// comfy-aig: the two ways of giving AIG Guider / AIG Sampler their tuned model are exclusive in the UI.
// Connecting `tuned_model` sets `lora_name` to None (the value is remembered and restored on disconnect)
// and hides lora_name and lora_strength, so the server's "exactly one tuned model" error cannot be made
// from the canvas. Loading a saved workflow changes no value: a file that sets both keeps both visible
// and the server names the problem when it is queued.
import { app } from "../../scripts/app.js";
import { findWidget, redraw, setWidgetHidden } from "./aig_util.js";

export const TUNED_NODE_TYPES = new Set(["AIGGuider", "AIGSampler"]);
export const NO_LORA = "None"; // nodes/guider.py NO_LORA
const TUNED_INPUT = "tuned_model";
const LORA_WIDGETS = ["lora_name", "lora_strength"];
const INPUT_SLOT = 1; // LiteGraph.INPUT

function tunedModelLinked(node) {
  return node.inputs?.find((input) => input.name === TUNED_INPUT)?.link != null;
}

/** Hide the LoRA-file widgets exactly when the tuned model comes from the link and no file is chosen. */
export function applyTunedVisibility(node) {
  const loraName = findWidget(node, "lora_name");
  if (!loraName) return false;
  const hide = tunedModelLinked(node) && loraName.value === NO_LORA;
  let changed = false;
  for (const name of LORA_WIDGETS) {
    const widget = findWidget(node, name);
    if (widget) changed = setWidgetHidden(widget, hide) || changed;
  }
  if (changed) redraw(node);
  return changed;
}

/** A user (not a workflow load) connected or removed the tuned_model link: switch the LoRA file off/back. */
function onTunedLinkChange(node, connected) {
  const loraName = findWidget(node, "lora_name");
  if (!loraName || app.configuringGraph) return;
  if (connected && loraName.value !== NO_LORA) {
    node.aigLoraBeforeLink = loraName.value;
    loraName.value = NO_LORA;
  } else if (!connected && node.aigLoraBeforeLink != null) {
    loraName.value = node.aigLoraBeforeLink;
    delete node.aigLoraBeforeLink;
  }
}

/** Node-type hooks of AIG Guider / AIG Sampler. */
export function patchTunedNodeType(nodeType, chainMethod) {
  chainMethod(nodeType.prototype, "onConnectionsChange", function (type, slotIndex, connected) {
    if (type === INPUT_SLOT && this.inputs?.[slotIndex]?.name === TUNED_INPUT) onTunedLinkChange(this, connected);
    applyTunedVisibility(this);
  });
  chainMethod(nodeType.prototype, "onConfigure", function () {
    applyTunedVisibility(this);
  });
  chainMethod(nodeType.prototype, "onDrawForeground", function () {
    applyTunedVisibility(this); // a lora_name changed by hand shows its widgets again at once
  });
}
