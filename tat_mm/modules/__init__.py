"""Distillation modules that are not losses (SoKD's DAM): pure torch, registered in ``MODELS``."""
# Each line imports one module file (importing registers it).
