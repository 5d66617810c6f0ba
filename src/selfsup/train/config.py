"""The ``train`` section of a config: the optimizer, its schedules and the loop's settings."""

from __future__ import annotations

from dataclasses import dataclass

from selfsup.fields import AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT, Range, setting
from selfsup.precision import DEVICES, PRECISIONS


@dataclass
class TrainConfig:
    epochs: int = setting(100, valid=AT_LEAST_1, what="train for at least one epoch")
    batch_size: int = setting(256, valid=AT_LEAST_1, what="the global batch (images per step)")
    optimizer: str = setting("lars", choices=("lars", "adamw", "sgd"))
    # base lr; the lr used is lr * batch_size / 256 (the official VICReg rule)
    lr: float = setting(
        0.2,
        valid=POSITIVE,
        what="the base lr, used as lr * batch_size / 256; an lr of 0 trains nothing, and "
        "eval.compare_random already evaluates an untrained backbone",
    )
    weight_decay: float = setting(1e-6, valid=NON_NEGATIVE, what="0 turns weight decay off")
    # cosine from weight_decay to this (DINO); None: fixed
    weight_decay_end: float | None = setting(
        None, valid=NON_NEGATIVE, what="null keeps train.weight_decay fixed"
    )
    # lars / sgd
    momentum: float = setting(
        0.9, valid=Range(0, 1, hi_open=True), what="SGD / LARS momentum, e.g. 0.9"
    )
    # LARS trust ratio: eta 0.001 unclipped is facebookresearch/vicreg and barlowtwins (a step of
    # ~lr * 0.1% of each tensor's norm); solo-learn's recipes use eta 0.02 with lars_clip=true
    # (a step of ~min(2% of the norm, lr * the gradient)). See train/optim.py.
    lars_eta: float = setting(
        0.001, valid=POSITIVE, what="the LARS trust coefficient, e.g. 0.001 (0.02 with lars_clip)"
    )
    lars_clip: bool = False
    # lr of biases and norm parameters relative to the weights' (official Barlow Twins:
    # --learning-rate-biases 0.0048 / --learning-rate-weights 0.2 = 0.024)
    bias_lr_scale: float = setting(
        1.0, valid=NON_NEGATIVE, what="lr of biases and norms relative to the weights'"
    )
    # capped at half the run (parts/schedules.py warmup_steps)
    warmup_epochs: float = setting(
        10.0, valid=NON_NEGATIVE, what="0 turns warm-up off; capped at half the run"
    )
    # at least this many warm-up steps whatever the data size (an epoch of 2,048 images is 8
    # steps at batch 256); measured in benchmarks/RESULTS.md "Recipes at any size"
    warmup_min_steps: int = setting(
        100, valid=NON_NEGATIVE, what="steps; the shortest warm-up at any data size"
    )
    final_lr_ratio: float = setting(
        0.001, valid=UNIT, what="the cosine ends at lr * final_lr_ratio"
    )
    # max global grad norm; None: off
    grad_clip: float | None = setting(
        None, valid=POSITIVE, what="a max gradient norm, e.g. 1.0; null turns it off"
    )
    device: str = setting("auto", choices=DEVICES)
    # auto: bf16 where native (CUDA >= sm80, CPU with AVX-512 BF16), fp16 on older CUDA GPUs
    # (with a GradScaler), else fp32
    precision: str = setting("auto", choices=PRECISIONS)
    # the NHWC memory layout for the model and its batches; a CPU fine-tune stays contiguous
    # (torch's CPU channels_last backward can abort: docs/reliability.md)
    channels_last: bool = True
    compile: bool = False  # torch.compile the method
    # steps between metric flushes (one host sync per flush)
    log_every: int = setting(10, valid=AT_LEAST_1, what="steps between metric flushes")
    # also checkpoint every N steps mid-epoch (0: at epoch ends only)
    checkpoint_every: int = setting(
        0, valid=NON_NEGATIVE, what="steps; 0 checkpoints at epoch ends only"
    )
    # skip up to N steps whose loss is NaN / inf (logged); 0: stop at once
    skip_nonfinite: int = setting(
        0, valid=NON_NEGATIVE, what="steps; 0 stops at the first NaN / inf loss"
    )
    progress: bool = True  # show a progress bar
    # also write TensorBoard event files (RUN_DIR/tensorboard; needs the tensorboard package)
    tensorboard: bool = False
