"""The pack's public node API as ComfyUI serves it in /object_info: ids, inputs, types, defaults, outputs.

`python tests/aig_testkit/node_schema.py` (with COMFYUI_ROOT set) rewrites tests/data/node_schema.json;
do that only for a deliberate change of the public API, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "node_schema.json"
PACK_PREFIX = "AIG"
# combos whose options come from folders or from ComfyUI itself (they vary by install and version)
LISTED_ELSEWHERE = {"lora_name", "model_name", "prompt_file", "sampler_name", "scheduler", "weights"}
INPUT_FIELDS = ("default", "min", "max", "step", "round", "multiline", "force_input", "control_after_generate")


def input_entry(name: str, spec: list) -> dict:
    """One input: its type (combo options unless listed elsewhere) and the fields workflows depend on."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list) or kind == "COMBO":
        values = kind if isinstance(kind, list) else options.get("options", [])
        kind = "COMBO" if name in LISTED_ELSEWHERE else ["COMBO", *values]
    entry = {"type": kind}
    entry.update({key: options[key] for key in INPUT_FIELDS if key in options})
    return entry


def node_entry(info: dict) -> dict:
    """One node's id-level facts: inputs by section, outputs, output node flag, category."""
    inputs = {section: {name: input_entry(name, spec) for name, spec in info["input"].get(section, {}).items()}
              for section in ("required", "optional")}
    return {
        "display_name": info["display_name"],
        "category": info["category"],
        "inputs": inputs,
        "input_order": info.get("input_order", {}),
        "outputs": list(zip(info["output"], info["output_name"], info["output_is_list"])),
        "output_node": info["output_node"],
    }


def pack_schema(object_info: dict) -> dict:
    """Every node of this pack (ids starting with AIG), sorted by id."""
    return {node_id: node_entry(info) for node_id, info in sorted(object_info.items()) if node_id.startswith(PACK_PREFIX)}


def normalised(schema: dict) -> dict:
    """The schema as JSON would read it back (tuples become lists)."""
    return json.loads(json.dumps(schema))


def write_snapshot(object_info: dict, path: Path = SNAPSHOT) -> None:
    """Write the snapshot (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(pack_schema(object_info), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aig_testkit.comfy import ComfyServer, comfyui_root

    root = comfyui_root()
    if root is None:
        sys.exit("set COMFYUI_ROOT to a ComfyUI checkout")
    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(root, Path(base)).start()
        try:
            write_snapshot(server.object_info(), Path(sys.argv[1]) if len(sys.argv) > 1 else SNAPSHOT)
        finally:
            server.stop()
