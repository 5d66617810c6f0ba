"""Losses: pure functions of tensors returning ``(loss, parts)``."""

from selfsup.losses.vicreg import vicreg_loss

__all__ = ["vicreg_loss"]
