"""ComfyUI V3 adapters over comfy_aig.core. Imported only from ``comfy_entrypoint``."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .diversity import DIVERSITY_NODES
from .evaluation import EVALUATION_NODES
from .guider import GUIDER_NODES
from .rewards import REWARD_NODES
from .schedule_preview import SCHEDULE_NODES
from .web_routes import register_with_comfyui


class AIGExtension(ComfyExtension):
    """Registers every node of the pack (node ids are permanent public API)."""

    @override
    async def on_load(self) -> None:
        """Adds the frontend's routes (nodes/web_routes.py) to ComfyUI's server; idempotent."""
        register_with_comfyui()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        await self.on_load()  # ComfyUI 0.3.64 never calls on_load; its server adds routes after loading nodes
        return [*SCHEDULE_NODES, *GUIDER_NODES, *REWARD_NODES, *DIVERSITY_NODES, *EVALUATION_NODES]
