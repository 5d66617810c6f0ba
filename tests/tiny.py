"""A config small enough for CPU tests: 128 synthetic 16-px images, a two-stage ResNet."""

TINY = [
    "data.dataset=synthetic",
    "data.image_size=16",
    "data.limit=128",
    "backbone.name=small_resnet",
    "backbone.depths=[1,1]",
    "backbone.widths=[8,16]",
    "method.projector=32-32",
    "train.epochs=2",
    "train.batch_size=32",
    "train.warmup_epochs=1",
    "train.log_every=3",
    "train.progress=false",
    "eval.linear.l2=[1.0,0.001]",
    "eval.finetune.lrs=[0.05]",
    "eval.train_limit=256",
    "eval.test_limit=128",
    "eval.min_steps=0",
]
