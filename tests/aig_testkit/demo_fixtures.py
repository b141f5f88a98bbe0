"""Tiny demo base-model config for tests (same layout as the shipped one, a fraction of the compute)."""

TINY = {
    "unet": {
        "sample_size": 16, "in_channels": 12, "out_channels": 12, "block_out_channels": [8, 16],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": 8, "attention_head_dim": 1, "norm_num_groups": 4,
    },
    "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                  "prediction_type": "v_prediction", "clip_sample": False},
    "text": {"embedding_dim": 8},
    "space_to_depth": 2,
}
