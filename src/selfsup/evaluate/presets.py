"""Published evaluation settings, applied with ``selfsup eval RUN --preset NAME`` (before any
key=value given on the command line). Each cites where its numbers come from."""

from __future__ import annotations

from selfsup.errors import ConfigError

EVAL_PRESETS: dict[str, tuple[str, list[str]]] = {
    "vicreg-linear": (
        "facebookresearch/vicreg README.md @4e12602 'Linear evaluation' (--lr-head 0.02) with "
        "evaluate.py @7c44ca0 defaults: 100 epochs, batch 256, weight decay 1e-6, SGD momentum "
        "0.9, cosine, RandomResizedCrop + flip",
        [
            "eval.protocols=[linear-aug]",
            "eval.linear_aug.epochs=100",
            "eval.linear_aug.lrs=[0.02]",
            "eval.linear_aug.weight_decay=1e-6",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
    "vicreg-semi-1pct": (
        "facebookresearch/vicreg README.md @4e12602 'Semi-supervised evaluation', 1% labels: "
        "20 epochs, --lr-backbone 0.03 --lr-classifier 0.08 --weight-decay 0 (batch 256, "
        "evaluate.py default)",
        [
            "eval.protocols=[finetune]",
            "eval.finetune.fractions=[0.01]",
            "eval.finetune.epochs=20",
            "eval.finetune.lrs=[0.03]",
            f"eval.finetune.head_lr_scale={0.08 / 0.03!r}",
            "eval.finetune.weight_decay=0.0",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
    "vicreg-semi-10pct": (
        "facebookresearch/vicreg README.md @4e12602 'Semi-supervised evaluation', 10% labels: "
        "20 epochs, --lr-backbone 0.01 --lr-classifier 0.1 --weight-decay 0 (batch 256)",
        [
            "eval.protocols=[finetune]",
            "eval.finetune.fractions=[0.1]",
            "eval.finetune.epochs=20",
            "eval.finetune.lrs=[0.01]",
            "eval.finetune.head_lr_scale=10.0",
            "eval.finetune.weight_decay=0.0",
            "eval.finetune.batch_size=256",
            "eval.crop_scale=[0.08,1.0]",
            "eval.min_steps=0",
        ],
    ),
}


def preset_overrides(name: str) -> list[str]:
    """The ``eval.*`` overrides of a published evaluation preset, or a ConfigError naming the
    valid presets."""
    if name not in EVAL_PRESETS:
        raise ConfigError(f"unknown eval preset {name!r}; valid: {', '.join(EVAL_PRESETS)}")
    return list(EVAL_PRESETS[name][1])
