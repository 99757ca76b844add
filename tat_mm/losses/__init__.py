"""Distillation losses: pure torch, registered in MMEngine's root ``MODELS``.

Every feature loss has the call signature ``loss(student_feat, teacher_feat, weight=None)`` where
``weight`` is an optional (B, 1, H, W) spatial weight map, and returns a scalar already multiplied
by its ``loss_weight``.
"""
# Each line imports one loss file (importing registers it).
