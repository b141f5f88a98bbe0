"""Offline diffusers configs (SD1.5, SDXL) for single-file loading."""
