"""Losses: pure functions of tensors returning ``(loss, parts)``."""

from selfsup.losses.barlow_twins import barlow_twins_loss
from selfsup.losses.contrastive import infonce_loss, multi_crop_nt_xent_loss, nt_xent_loss
from selfsup.losses.dino import dino_center_update, dino_loss
from selfsup.losses.isd import isd_loss
from selfsup.losses.vicreg import vicreg_loss

__all__ = [
    "barlow_twins_loss",
    "dino_center_update",
    "dino_loss",
    "infonce_loss",
    "isd_loss",
    "multi_crop_nt_xent_loss",
    "nt_xent_loss",
    "vicreg_loss",
]
