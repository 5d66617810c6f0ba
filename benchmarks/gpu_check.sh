#!/usr/bin/env bash
# Five-minute check for the day a GPU is lent (docs/gpu_check.md):
#   bash benchmarks/gpu_check.sh [--dry-run] [--out runs/gpu_check] [--only NAME,...] [--budget-s 120]
# Without CUDA it runs its dry mode (tiny CPU versions; CUDA-only parts SKIP) in under a minute.
# Python: $PYTHON, else the project's .venv, else python3 (with src/ on the path). Relative
# paths (--out) are taken from the current directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
