"""Differentiable reward models (PickScore, HPSv2/2.1, LAION aesthetic, CLIPScore)."""
