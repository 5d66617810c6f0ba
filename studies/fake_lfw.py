"""Stand-ins for the LFW study's quick scale where LFW and a pretrained ResNet-50 are absent.

Writes ``ROOT/lfw-py/lfw_funneled/<Name>/<Name>_000i.jpg`` (torchvision's LFW-people layout:
each person a colour and stripe pattern plus noise) with a ``pairs.txt`` of 10 folds, and a
random-init torchvision ResNet-50 state dict (a stand-in for a pretrained checkpoint: the
workflow runs, the numbers mean nothing).

Usage: ``python studies/fake_lfw.py ROOT CHECKPOINT [--people 8] [--images 24] [--few 4]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image


def write_lfw(root: Path, people: int, images: int, few: int = 4, side: int = 64) -> Path:
    base = root / "lfw-py"
    rng = np.random.default_rng(0)
    names = [f"Person_{chr(65 + p)}" for p in range(people)]
    # people with 6 images, under the 20 that selfsup faces fine-tunes on: as in LFW, where
    # most of pairs.txt's people are never fine-tuned on, their pairs score the unseen people
    rare = [f"Rare_{chr(65 + p)}" for p in range(few)]
    counts = {**dict.fromkeys(names, images), **dict.fromkeys(rare, 6)}
    for p, name in enumerate(names + rare):
        folder = base / "lfw_funneled" / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([40 + 25 * p, 220 - 20 * p, 80 + 30 * (p % 4)])
        stripes = (np.arange(side) // (3 + p % 5) % 2)[:, None] * 50
        pattern = stripes if p % 2 else stripes.T
        for i in range(1, counts[name] + 1):
            img = colour + pattern[..., None] + rng.normal(0, 20, (side, side, 3))
            out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            out.save(folder / f"{name}_{i:04d}.jpg")
    per_fold = 3 if few >= 2 else 2
    lines = [f"10\t{per_fold}"]  # 10 folds, each per_fold matched then per_fold mismatched pairs
    for fold in range(10):
        a, b = names[fold % people], names[(fold + 1) % people]
        matched = [f"{a}\t{1 + fold}\t{2 + fold}", f"{b}\t{1 + fold}\t{4 + fold}"]
        mismatched = [f"{a}\t{3 + fold}\t{b}\t{1 + fold}", f"{b}\t{2 + fold}\t{a}\t{5 + fold}"]
        if per_fold == 3:  # one pair of each kind among the rare (never fine-tuned) people
            c, d = rare[fold % few], rare[(fold + 1) % few]
            matched.append(f"{c}\t{1 + fold % 5}\t{2 + fold % 5}")
            mismatched.append(f"{c}\t{1 + fold % 6}\t{d}\t{1 + (fold + 2) % 6}")
        lines += matched + mismatched
    (base / "pairs.txt").write_text("\n".join(lines) + "\n")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--few", type=int, default=4, help="people with 6 images (not fine-tuned)")
    args = parser.parse_args()
    print(write_lfw(args.root, args.people, args.images, args.few))
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.checkpoint)
    print(args.checkpoint)


if __name__ == "__main__":
    main()
