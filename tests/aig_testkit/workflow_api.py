"""UI-format workflow (what the ComfyUI editor saves) -> API-format prompt (what POST /prompt takes).

Follows the frontend's rules: widget values are listed in the node's input order (required, then
optional), an INT with control_after_generate is followed by its control value ("fixed",
"randomize", ...), and a widget input driven by a link keeps its slot in widgets_values.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SKIPPED_MODES = {2, 4}  # muted, bypassed
UI_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


class WorkflowError(ValueError):
    """The workflow cannot be converted; the message names the node."""


def _is_widget(spec) -> bool:
    """A widget input (its value is in widgets_values); forceInput makes a socket with no widget."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def node_types(workflow: dict) -> set[str]:
    """Every executable node type the workflow uses."""
    return {n["type"] for n in workflow["nodes"] if n["type"] not in UI_ONLY_TYPES}


def _convert_node(node: dict, info: dict, links: dict) -> dict:
    linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
    values = list(node.get("widgets_values") or [])
    inputs = {}
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            if _is_widget(spec):
                if not values:
                    raise WorkflowError(f"node {node['id']} ({node['type']}): no widget value left for '{name}'")
                value = values.pop(0)
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if options.get("control_after_generate"):
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
    if values:
        raise WorkflowError(f"node {node['id']} ({node['type']}): {len(values)} widget values left over: {values}")
    return {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title", node["type"])}}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """API prompt {node_id: {class_type, inputs}}; WorkflowError names a missing node type or bad widgets."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in SKIPPED_MODES or node["type"] in UI_ONLY_TYPES:
            continue
        if node["type"] not in object_info:
            raise WorkflowError(f"node {node['id']}: type '{node['type']}' is not in this ComfyUI's /object_info")
        prompt[str(node["id"])] = _convert_node(node, object_info[node["type"]], links)
    return prompt
