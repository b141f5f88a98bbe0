"""The public node API (ids, input names, types, defaults, outputs) equals the committed snapshot.

Every saved workflow depends on these; a change must be deliberate: rewrite the snapshot with
`COMFYUI_ROOT=... python tests/aig_testkit/node_schema.py` and say why in the commit.
"""

from __future__ import annotations

import json

from aig_testkit.node_schema import SNAPSHOT, normalised, pack_schema


def test_object_info_matches_the_snapshot(comfy_server):
    served = normalised(pack_schema(comfy_server.object_info()))
    expected = json.loads(SNAPSHOT.read_text())
    assert sorted(served) == sorted(expected), "node ids changed"
    for node_id, entry in expected.items():
        assert served[node_id] == entry, f"{node_id}: public inputs/outputs changed (see {SNAPSHOT.name})"


def test_snapshot_names_every_schedule_input():
    """The snapshot is not empty of the vocabulary it guards: each AIG sampling node lists all schedule inputs."""
    from comfy_aig.core.schedules import VALUE_NAMES

    expected = json.loads(SNAPSHOT.read_text())
    for node_id in ("AIGGuider", "AIGSampler", "AIGSchedulePreview"):
        inputs = expected[node_id]["inputs"]
        assert set(VALUE_NAMES) <= set(inputs["required"]) | set(inputs["optional"]), node_id
