// comfy-aig: shows the text results of the pack's nodes on the node after a run.
// The nodes return ComfyUI's PreviewText (ui = {"text": [...]}), which the frontend itself shows only on
// its PreviewAny node; here every AIG node gets a read-only, scrollable text area (not serialised, added
// at the end of the widgets on the first result, so saved workflows never see it).
import { findWidget, redraw } from "./aig_util.js";

export const TEXT_WIDGET_NAME = "aig_result_text";
const LINE_HEIGHT = 15;
const MAX_TEXT_HEIGHT = 260;

function createTextWidget(node) {
  const area = document.createElement("textarea");
  area.className = "comfy-multiline-input aig-result-text";
  area.readOnly = true;
  area.spellcheck = false;
  area.dataset.aigNode = String(node.id);
  area.style.whiteSpace = "pre-wrap";
  area.style.fontFamily = "monospace";
  area.style.fontSize = "11px";
  const lines = () => Math.max(2, area.value.split("\n").length + Math.floor(area.value.length / 60));
  const widget = node.addDOMWidget(TEXT_WIDGET_NAME, "aig_text", area, {
    getValue: () => area.value,
    setValue: (value) => {
      area.value = value;
    },
    getMinHeight: () => Math.min(MAX_TEXT_HEIGHT, lines() * LINE_HEIGHT + 12),
    serialize: false,
  });
  widget.serialize = false;
  return widget;
}

/** Put a node's text result (one string or several) into its text area; grows the node to fit it. */
export function showTextResult(node, texts) {
  if (!texts?.length) return;
  const widget = findWidget(node, TEXT_WIDGET_NAME) ?? createTextWidget(node);
  widget.value = texts.map(String).join("\n\n");
  const fitted = node.computeSize();
  node.setSize([Math.max(node.size[0], fitted[0], 320), Math.max(node.size[1], fitted[1])]);
  redraw(node);
}

/** onExecuted hook of every AIG node type. */
export function patchTextOutputNodeType(nodeType, chainMethod) {
  chainMethod(nodeType.prototype, "onExecuted", function (message) {
    showTextResult(this, message?.text);
  });
}
