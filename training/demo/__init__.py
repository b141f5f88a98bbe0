"""The CPU demo: a toy world, its base model, reward hacking and the AIG tradeoff."""
