"""Feature extraction under the run's precision: kNN-20 of the shipped VICReg run
(``runs/accuracy/vicreg``, from ``benchmarks/accuracy.py``) with fp32 and bf16 extraction,
and the extraction time of the 60,000 + 10,000 images. Usage:
``OMP_NUM_THREADS=1 python benchmarks/extract_precision.py [RUN_DIR]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selfsup.data.array import channel_stats
from selfsup.evaluate.harness import load_eval_splits
from selfsup.evaluate.knn import knn_predict
from selfsup.features import extract_features
from selfsup.rundir import load_run


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/accuracy/vicreg")
    cfg, method = load_run(run)
    d = cfg.data
    train, test = load_eval_splits(
        d.dataset, cfg.eval, root=d.root, download=False, image_size=d.image_size
    )
    mean, std = channel_stats(train.images)
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        kw = dict(size=cfg.views.size, mean=mean, std=std, precision=precision)
        bank = extract_features(method.backbone, train.images, **kw)
        query = extract_features(method.backbone, test.images, **kw)
        seconds = time.perf_counter() - t0
        scores = knn_predict(bank, train.labels, query, k=20, num_classes=len(train.classes))
        acc = float((scores.argmax(1) == test.labels).float().mean())
        print(f"{precision}: kNN-20 {100 * acc:.2f}%, extraction {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
