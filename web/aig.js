// comfy-aig frontend extension: marks AIG nodes with a shared colour so they are easy to spot.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "comfy_aig.node_colours",
  async nodeCreated(node) {
    if (node.comfyClass && node.comfyClass.startsWith("AIG")) {
      node.color = "#2a4d3a";
      node.bgcolor = "#1f3a2c";
    }
  },
});
