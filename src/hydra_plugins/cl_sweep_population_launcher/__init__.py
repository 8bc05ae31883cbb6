"""Hydra launcher `population`: jobs that share a program train together as one vectorised population."""
