"""The README walked through as a newcomer would (issue #25): every command of its ``bash``
blocks, top to bottom, through the installed ``selfsup`` console script, in a scratch folder
that is also ``$HOME`` (``~/photos``, ``~/photo.jpg`` are real Fashion-MNIST images written
there). Budgets are cut by overrides appended to the README's own (``data.limit=512``, one
epoch, small evaluations); nothing else in a command changes. Commands that need what this
machine lacks are skipped, each with its reason (the test of what they do instead is named);
the walk must run at least ``MIN_RUN`` commands, so that a README turned all-skipped fails."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.sources import load_dataset

ROOT = Path(__file__).resolve().parent.parent
SELFSUP = Path(sys.executable).with_name("selfsup")
MIN_RUN = 15
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

# appended to a new run's command (a later key=value wins over the README's own)
TRAIN_BUDGET = ["data.limit=512", "train.epochs=1", "train.warmup_epochs=0"]
EVAL_BUDGET = ["eval.test_limit=300", "eval.linear.max_iter=50", "eval.finetune.epochs=1"]
EVAL_BUDGET += ["eval.min_steps=0", "eval.finetune.lrs=[0.05]", "train.progress=false"]

SKIPS = (  # (pattern in the command, why it is skipped here)
    (r"^make ", "make itself: CI runs `make test`; `make demo` is benchmarks/RESULTS.md's"),
    (r"^wget ", "downloads weights (no internet here); tests/test_official_weights.py"),
    (r"^torchrun ", "several GPUs or nodes; tests/test_torchrun.py runs 2 CPU processes"),
    (r"^(HEAD=|srun )", "a SLURM allocation; tests/test_torchrun.py runs 2 CPU processes"),
    (r"^selfsup study ", "a whole study; tests/test_study.py runs studies at test scale"),
    (r"^selfsup faces ", "needs LFW; tests/test_faces.py runs it on files in LFW's layout"),
    (r"cifar10|cifar100|stl10|imagenet100", "needs CIFAR / STL-10 / ImageNet-100 files"),
    (r"runs/resnet-cifar", "a CIFAR ResNet run; tests/test_export.py exports ResNet-18s"),
)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, continuations joined, in order."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()  # a trailing comment
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPS if re.search(pattern, command)), None)


def budgeted(args: list[str]) -> list[str]:
    """The README's arguments with the budget appended where a command trains or scores."""
    if args[0] in ("pretrain", "supervised", "joint") and "--resume" not in args:
        return [*args, *TRAIN_BUDGET, *EVAL_BUDGET]
    if args[0] == "eval":
        return [*args, *EVAL_BUDGET[:-1]]
    return args


def write_photos(home: Path) -> None:
    """~/photos (a flat folder of PNGs) and ~/photo.jpg: real Fashion-MNIST images."""
    images = load_dataset("fashion-mnist", "test").images[:24, 0].numpy()
    (home / "photos").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(np.ascontiguousarray(img)).save(home / "photos" / f"item-{i:02d}.png")
    Image.fromarray(np.ascontiguousarray(images[0])).convert("RGB").save(home / "photo.jpg")


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="make test installs Fashion-MNIST")
def test_the_readme_runs_top_to_bottom(tmp_path) -> None:
    home = tmp_path / "home"
    write_photos(home)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "docs").mkdir()  # `selfsup report ... --screenshot docs/...png`
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", "SELFSUP_CACHE": "off"}
    ran, skipped = [], []
    for command in readme_commands():
        why = skip_reason(command)
        if why:
            skipped.append((command, why))
            continue
        args = [a.replace("~", str(home)) for a in budgeted(shlex.split(command)[1:])]
        done = subprocess.run(
            [str(SELFSUP), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        ran.append(command)
    print("ran:", *ran, "skipped:", *(f"{c}  ({w})" for c, w in skipped), sep="\n  ")
    assert len(ran) >= MIN_RUN, (ran, skipped)
    # what the walk left behind is what the README says it makes
    assert (tmp_path / "runs" / "vicreg-fm" / "export" / "backbone.safetensors").is_file()
    assert (tmp_path / "photos.parquet").is_file() and (tmp_path / "near.png").is_file()
    assert (tmp_path / "docs" / "report_fashion_mnist.png").is_file()
    assert list((tmp_path / "runs" / "vicreg-tb" / "tensorboard").glob("events.*"))


def test_the_readme_commands_that_are_skipped_still_parse() -> None:
    """Those the walk skips are still complete commands: every study line names its --out (it
    once lacked it, issue #25.10), and each parses with the real parser."""
    from selfsup.cli import build_parser

    parser = build_parser()
    for command in readme_commands():
        if not command.startswith("selfsup ") or not skip_reason(command):
            continue
        args = shlex.split(command)[1:]
        if args[0] == "study":
            assert "--out" in args, command
        parsed, extra = parser.parse_known_args(args)  # as selfsup.cli.main reads them
        assert all("=" in a and not a.startswith("-") for a in extra), (command, extra)
        assert hasattr(parsed, "handler"), command
