"""ComfyUI V3 adapters over comfy_aig.core. Imported only from ``comfy_entrypoint``."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .rewards import REWARD_NODES
from .schedule_preview import SCHEDULE_NODES


class AIGExtension(ComfyExtension):
    """Registers every node of the pack (node ids are permanent public API)."""

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*SCHEDULE_NODES, *REWARD_NODES]
