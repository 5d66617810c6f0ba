"""selfsup faces: pretrained weights -> fine-tuned on LFW identities -> identification,
verification and similar / dissimilar face grids (the workflow is selfsup.faces)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

HELP = """examples:
  selfsup faces --weights resnet50.pth --data-root ~/data --out runs/faces-vicreg
  selfsup faces --weights dino_resnet50_pretrain.pth --data-root ~/data --out runs/faces-dino \\
      --min-images 10 eval.finetune.epochs=10 eval.finetune.lrs=[0.01]

LFW must be in torchvision's layout: DATA_ROOT/lfw-py/lfw_funneled/<Person>/<Person>_0001.jpg
with DATA_ROOT/lfw-py/pairs.txt. Without --weights the backbone starts from random init (the
baseline). key=value overrides set any config key (backbone.name=resnet18, data.image_size=64,
eval.finetune.epochs=..., eval.finetune.lrs=[...], eval.knn.k=[...], train.device=cpu, seed=1).
"""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "faces",
        help="fine-tune pretrained weights on LFW identities; identification, verification, "
        "face grids",
        description=__doc__,
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--weights", help="pretrained backbone weights (any backbone.weights format)")
    p.add_argument("--data-root", type=Path, required=True, help="folder holding lfw-py/")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument(
        "--min-images",
        type=int,
        default=None,
        help="keep people with at least this many images (default: "
        "selfsup.data.lfw.DEFAULT_MIN_IMAGES, 20)",
    )
    p.add_argument("--queries", type=int, default=6, help="test faces drawn in each grid")
    p.add_argument("-k", type=int, default=8, help="neighbours per query in the grids")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.data.lfw import DEFAULT_MIN_IMAGES
    from selfsup.faces import faces_config, run_faces
    from selfsup.run.lock import run_lock

    min_images = DEFAULT_MIN_IMAGES if args.min_images is None else args.min_images
    for name, value in (("--queries", args.queries), ("-k", args.k)):
        if value < 1:
            raise SelfsupError(f"{name} must be at least 1, got {value}")
    root = args.data_root.expanduser()
    cfg = faces_config(args.overrides, args.weights, root, min_images)
    with run_lock(args.out):
        res = run_faces(
            cfg, root, args.out, min_images=min_images, n_queries=args.queries, k=args.k
        )
    _print_results(res, args.out)
    return 0


def _print_results(res: dict[str, Any], out: Path) -> None:
    print(
        f"LFW: {res['n_people']} people with >= {res['min_images']} images, "
        f"{res['n_train']} train / {res['n_test']} test images"
    )
    for init, accs in res["identification"].items():
        if isinstance(accs, dict):
            shown = ", ".join(f"{k} {100 * v:.1f}%" for k, v in accs.items())
            print(f"identification ({init}): {shown}")
    top1 = res["identification"]["classifier_top1"]
    print(f"identification (fine-tuned classifier): {100 * top1:.1f}%")
    for init, ver in (res["verification"] or {}).items():
        unseen = ver.get("unseen_people")
        if unseen:
            print(
                f"verification ({init}), people not fine-tuned on: {100 * unseen['mean']:.2f} ± "
                f"{100 * unseen['std']:.2f}% over {len(unseen['folds'])} folds, "
                f"{unseen['n_pairs']} pairs"
            )
        else:
            print(f"verification ({init}): no pairs of people outside the fine-tuning set")
        print(
            f"verification ({init}), all pairs ({ver['pairs_seen_in_finetuning']} show a "
            f"fine-tuned person): {100 * ver['mean']:.2f} ± {100 * ver['std']:.2f}% over "
            f"{len(ver['folds'])} folds"
        )
    for init, grid in res["grids"].items():
        print(f"grid ({init}): {grid['path']}")
    print(f"results: {out / 'results.json'}")
