#!/usr/bin/env bash
# The Fashion-MNIST evaluation study: pretrain + every protocol, the supervised baseline, joint
# training, then one comparison table. Usage: benchmarks/study_fashion_mnist.sh [OUT_DIR] [key=value ...]
set -euo pipefail
out=${1:-runs/study-fm}; shift || true
selfsup=${SELFSUP:-selfsup}
cfg=configs/fashion-mnist/study.yaml
$selfsup pretrain --config $cfg --out "$out/vicreg" "$@"
# the baselines: the fine-tuning recipe (SGD, lr 1.6 x batch / 256, chosen on held-out training
# images) from random init, trained for a comparable number of steps, not SSL's 3 epochs
sup="eval.protocols=[knn] eval.compare_random=false train.optimizer=sgd train.lr=1.6
     train.weight_decay=0.0005 train.batch_size=64 train.warmup_epochs=0"
$selfsup supervised --config $cfg --out "$out/supervised" $sup train.epochs=10 "$@"
$selfsup supervised --config $cfg --out "$out/supervised-10pct" method.label_fraction=0.1 \
    $sup train.epochs=40 "$@"
$selfsup joint --config $cfg --out "$out/joint" eval.protocols=[knn] eval.compare_random=false \
    train.epochs=10 "$@"
$selfsup table "$out/vicreg" "$out/supervised" "$out/supervised-10pct" "$out/joint"
