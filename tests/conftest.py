"""Shared fixtures: the real-ComfyUI harness (skips loudly without COMFYUI_ROOT) and cached tiny models."""

from __future__ import annotations

import pytest

from aig_testkit.comfy import ComfyServer, comfyui_root, setup_inprocess

SKIP_REASON = (
    "COMFYUI_ROOT is not set: real-ComfyUI test skipped "
    "(point COMFYUI_ROOT at a ComfyUI checkout to run it, see README 'Testing against a real ComfyUI')"
)


@pytest.fixture(scope="session")
def comfy_root():
    """Path of the ComfyUI checkout; skips the test with the reason when COMFYUI_ROOT is unset."""
    root = comfyui_root()
    if root is None:
        pytest.skip(SKIP_REASON)
    return root


@pytest.fixture(scope="session")
def comfy_server(comfy_root, tmp_path_factory):
    """One ComfyUI server per test session, with this pack loaded; stopped by PID at the end."""
    server = ComfyServer(comfy_root, tmp_path_factory.mktemp("comfy_base"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_inprocess(comfy_root):
    """ComfyUI importable in this process (CPU); returns the checkout path."""
    setup_inprocess(comfy_root)
    return comfy_root


@pytest.fixture(scope="session")
def sd15_checkpoint(tmp_path_factory):
    """Shallow SD1.5-shaped single-file checkpoint (original key layout), built once per session."""
    from aig_testkit.sd_fixtures import build_sd15_checkpoint

    return build_sd15_checkpoint(tmp_path_factory.mktemp("sd15") / "aig_tiny_sd15.safetensors")


@pytest.fixture(scope="session")
def sd15_lora(tmp_path_factory):
    """Kohya-format LoRA matching the shallow SD1.5 fixture's attention layers."""
    from aig_testkit.sd_fixtures import build_kohya_lora

    return build_kohya_lora(tmp_path_factory.mktemp("lora") / "aig_tiny_lora.safetensors")


@pytest.fixture(scope="session")
def aig_world(comfy_inprocess, sd15_checkpoint, sd15_lora):
    """In-process ComfyUI world for the guider tests: base, LoraLoader(base, 0.8), another checkpoint + LoRA, conds."""
    from aig_testkit.aig_sampling import LORA_STRENGTH, build_world

    return build_world(sd15_checkpoint, sd15_lora, LORA_STRENGTH)
