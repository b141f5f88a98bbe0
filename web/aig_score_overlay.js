// comfy-aig: draws each image's reward score on the image previews of AIGScoreImages and AIGRankImages.
// The nodes send their images as temp previews together with "aig_scores" (one per image, same order;
// best first for Rank). The frontend draws the previews in its '$$canvas-image-preview' widget; this module
// wraps that widget's drawing to put a score label on every thumbnail (grid view) or the shown image.
import { app } from "../../scripts/app.js";
import { findWidget } from "./aig_util.js";

export const SCORE_NODE_TYPES = new Set(["AIGScoreImages", "AIGRankImages"]);
const PREVIEW_WIDGET_NAME = "$$canvas-image-preview";
const SIZE_TEXT_HEIGHT = 15; // the frontend's image-size caption below a single image

function scoreLabel(node, index) {
  const score = node.aigScores[index];
  const text = Number.isFinite(score) ? score.toFixed(4) : String(score);
  // Rank: place in the best-first order; Score: the image's index, as in the node's summary text ("#0: ...")
  return node.type === "AIGRankImages" ? `${index + 1}. ${text}` : `#${index} ${text}`;
}

function drawLabel(ctx, text, x, y, fontSize) {
  ctx.font = `bold ${fontSize}px sans-serif`;
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  const width = ctx.measureText(text).width + 8;
  ctx.fillStyle = "rgba(0, 0, 0, 0.72)";
  ctx.beginPath();
  ctx.roundRect(x, y, width, fontSize + 6, 4);
  ctx.fill();
  ctx.fillStyle = "#ffe27a";
  ctx.fillText(text, x + 4, y + 3);
}

/** [x, y, w, h] of the single image the preview widget shows (mirrors the frontend's layout). */
function singleImageRect(node, img, shiftY) {
  const sizeText = app.extensionManager?.setting?.get?.("Comfy.Node.AllowImageSizeDraw") ? SIZE_TEXT_HEIGHT : 0;
  const dw = node.size[0];
  const dh = node.size[1] - shiftY - sizeText;
  const scale = Math.min(dw / img.naturalWidth, dh / img.naturalHeight, 1);
  const w = img.naturalWidth * scale;
  const h = img.naturalHeight * scale;
  return [(dw - w) / 2, (dh - h) / 2 + shiftY, w, h];
}

/** Score labels over the previews that the frontend has just drawn. */
export function drawScores(ctx, node, shiftY) {
  const imgs = node.imgs ?? [];
  if (!node.aigScores?.length || !imgs.length) return;
  ctx.save();
  if (node.imageIndex == null && node.imageRects?.length) {
    node.imageRects.forEach(([x, y, w], i) => {
      if (i < node.aigScores.length) drawLabel(ctx, scoreLabel(node, i), x + 4, y + 4, w < 90 ? 10 : 12);
    });
  } else {
    const index = node.imageIndex ?? 0;
    const img = imgs[index];
    if (img?.naturalWidth && index < node.aigScores.length) {
      const [x, y] = singleImageRect(node, img, shiftY);
      drawLabel(ctx, scoreLabel(node, index), x + 6, y + 6, 14);
    }
  }
  ctx.restore();
}

/** Wrap the preview widget's drawing once it exists (the frontend adds it when images arrive). */
function wrapPreviewWidget(node) {
  const widget = findWidget(node, PREVIEW_WIDGET_NAME);
  if (!widget || widget.aigScoresWrapped) return;
  const original = widget.drawWidget;
  widget.drawWidget = function (ctx, options) {
    original.call(this, ctx, options);
    drawScores(ctx, node, this.y);
  };
  widget.aigScoresWrapped = true;
}

/** Node-type hooks: remember the scores of the last run and draw them on the previews. */
export function patchScoreNodeType(nodeType, chainMethod) {
  chainMethod(nodeType.prototype, "onExecuted", function (message) {
    this.aigScores = (message?.aig_scores ?? []).map(Number);
  });
  chainMethod(nodeType.prototype, "onDrawForeground", function () {
    wrapPreviewWidget(this);
  });
}
