#!/usr/bin/env bash
# The Fashion-MNIST evaluation study: VICReg + every protocol next to its random-init and
# raw-pixel baselines, the supervised ceiling, joint training, then one table with paired tests.
# Usage: benchmarks/study_fashion_mnist.sh [OUT_DIR] [key=value ...]
# Runs that finished are kept (delete a run directory to redo it).
set -euo pipefail
out=${1:-runs/study-fm}; shift || true
selfsup=${SELFSUP:-selfsup}
cfg=configs/fashion-mnist/study.yaml
run() {  # run DIR COMMAND...: skip a finished run, resume an interrupted one
    local dir=$1; shift
    if [ -f "$dir/results.json" ]; then echo "$dir: finished, skipped"; return; fi
    if [ -f "$dir/checkpoints/last.pt" ]; then $selfsup pretrain --out "$dir" --resume; return; fi
    "$@"
}
# 1. VICReg, then knn, linear, finetune 1% / 10% and the pseudo-label sweep, each also from
#    random init: "finetune (random)" is supervised training from scratch on the same labels,
#    with the same steps and its own lr choice
run "$out/vicreg" $selfsup pretrain --config $cfg --out "$out/vicreg" "$@"
# 2. the ceiling: supervised from scratch on all 10,000 labels (10 epochs, batch 64)
sup="eval.protocols=[knn,linear] eval.compare_random=false eval.compare_pixels=false
     train.optimizer=sgd train.lr=1.6 train.weight_decay=0.0005 train.batch_size=64
     train.warmup_epochs=0"
run "$out/supervised" $selfsup supervised --config $cfg --out "$out/supervised" $sup \
    train.epochs=10 "$@"
# 3. joint VICReg + cross-entropy on 10% of the labels: 10 epochs = 390 steps, the fine-tuning
#    rows' budget (eval.min_steps)
run "$out/joint" $selfsup joint --config $cfg --out "$out/joint" eval.protocols=[knn,linear] \
    eval.compare_random=false eval.compare_pixels=false train.epochs=10 "$@"
$selfsup table "$out/vicreg" "$out/supervised" "$out/joint" --paired
