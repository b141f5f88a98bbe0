"""Training presets (TOML) for `comfy-aig train`."""
