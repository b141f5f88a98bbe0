"""Test support for comfy-aig: tiny models in real file layouts and a real-ComfyUI harness."""
