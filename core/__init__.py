"""Pure math and reward models of comfy-aig. Never imports ComfyUI, diffusers or training."""
