#!/usr/bin/env bash
# The Fashion-MNIST evaluation study: pretrain + every protocol, the supervised baseline, joint
# training, then one comparison table. Usage: benchmarks/study_fashion_mnist.sh [OUT_DIR] [key=value ...]
set -euo pipefail
out=${1:-runs/study-fm}; shift || true
selfsup=${SELFSUP:-selfsup}
cfg=configs/fashion-mnist/study.yaml
$selfsup pretrain --config $cfg --out "$out/vicreg" "$@"
# the baseline trains to a comparable number of steps as fine-tuning, not SSL's 3 epochs
$selfsup supervised --config $cfg --out "$out/supervised" eval.protocols=[knn] \
    eval.compare_random=false train.epochs=10 train.lr=0.001 train.weight_decay=0.0001 "$@"
$selfsup supervised --config $cfg --out "$out/supervised-10pct" method.label_fraction=0.1 \
    eval.protocols=[knn] eval.compare_random=false train.epochs=40 train.batch_size=64 \
    train.lr=0.001 train.weight_decay=0.0001 "$@"
$selfsup joint --config $cfg --out "$out/joint" eval.protocols=[knn] eval.compare_random=false "$@"
$selfsup table "$out/vicreg" "$out/supervised" "$out/supervised-10pct" "$out/joint"
