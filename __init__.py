"""comfy-aig: Annealed Importance Guidance for ComfyUI (Jena et al., 2024).

ComfyUI loads this folder as a custom node pack and calls ``comfy_entrypoint``;
outside ComfyUI it is the ``comfy_aig`` package. Importing it imports nothing heavy.
"""

WEB_DIRECTORY = "./web"

__version__ = "0.1.0"


async def comfy_entrypoint():
    """ComfyUI V3 entry point: build the extension lazily (ComfyUI is importable only here)."""
    from .nodes import AIGExtension

    return AIGExtension()
