"""Every shipped Fashion-MNIST recipe at its full length on small data: does any diverge?

The test suite's sweep (``tests/test_recipe_sweep.py``) runs each recipe for about 30 steps at
500 to 4,096 images, batch 32 to 512; this runs the same grid at each recipe's own number of
epochs, so that the learning rate reaches its peak and decays as in a real run. A cell is
"ok" when every logged loss is finite and the last tenth of the steps ends below the first
tenth - or, for MoCo and DINO, whose losses rise at first by design (the queue fills; DINO's
early near-uniform phase), when no loss exceeds chance level (ln(1 + queue), ln(prototypes)),
as in the test; the table lists each cell's first and last loss and its peak.

Each cell is a run directory under ``--out`` that is skipped once finished, so the sweep can be
stopped and continued::

    OMP_NUM_THREADS=1 python benchmarks/recipe_sweep.py --out runs/recipe-sweep
    python benchmarks/recipe_sweep.py --out runs/recipe-sweep --sizes 500 --batches 32,256
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from selfsup.cli import main as selfsup
from selfsup.config import load_config

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["vicreg", "barlow_twins", "simclr", "moco", "isd", "dino", "dino_twins"]
CONFIGS = ["demo.yaml", *(f"fashion-mnist/{m}.yaml" for m in METHODS)]


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def cell(config: str, n: int, batch: int, out: Path) -> dict:
    run = out / f"{config.replace('/', '-').removesuffix('.yaml')}-n{n}-b{batch}"
    done = run / "results.json"
    if not done.is_file():
        shutil.rmtree(run, ignore_errors=True)
        code = selfsup(
            [
                "pretrain",
                "--config",
                str(ROOT / "configs" / config),
                "--out",
                str(run),
                f"data.limit={n}",
                f"train.batch_size={batch}",
                "train.log_every=1",
                "train.progress=false",
                "eval.protocols=[]",
                "eval.monitor_every=0",
                "eval.compare_random=false",
                "eval.compare_pixels=false",
            ]
        )
        if code != 0 and not (run / "metrics.jsonl").is_file():
            return {"config": config, "n": n, "batch": batch, "ok": False, "why": f"exit {code}"}
    seen = losses(run)
    tenth = max(1, len(seen) // 10)
    finite = all(math.isfinite(x) for x in seen)
    fell = finite and sum(seen[-tenth:]) < sum(seen[:tenth])
    method = load_config(ROOT / "configs" / config).method
    if method.name in ("moco", "dino"):
        size = method.queue_size + 1 if method.name == "moco" else method.out_dim
        fell = finite and max(seen) <= 1.02 * math.log(size)  # at or below chance
    return {
        "config": config,
        "n": n,
        "batch": batch,
        "steps": len(seen),
        "ok": finite and fell,
        "first": seen[0],
        "last": seen[-1],
        "peak": max(seen),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/recipe-sweep"))
    parser.add_argument("--sizes", default="500,2048")
    parser.add_argument("--batches", default="32,256,512")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args(argv)
    rows = []
    for config in args.configs.split(","):
        for n in map(int, args.sizes.split(",")):
            for batch in map(int, args.batches.split(",")):
                if batch > n:
                    continue  # refused with a clear error: the batch exceeds the images
                r = cell(config, n, batch, args.out)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print("\n| config | images | batch | steps | loss first -> last (peak) | ok |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "steps" not in r:
            print(f"| {r['config']} | {r['n']} | {r['batch']} | - | {r['why']} | no |")
            continue
        ok = "yes" if r["ok"] else "NO"
        print(
            f"| {r['config']} | {r['n']} | {r['batch']} | {r['steps']} | "
            f"{r['first']:.3g} -> {r['last']:.3g} ({r['peak']:.3g}) | {ok} |"
        )


if __name__ == "__main__":
    main()
