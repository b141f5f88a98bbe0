"""Standalone training, sampling and evaluation on diffusers. Imports core, never nodes."""
