#!/usr/bin/env bash
# Python `forward` against the Rust `bench` on D0 (specs/d0.yaml, fixture weights), the same
# generated crate: its binary and its Python package (pip-installed into target/py-venv, which
# tests/run.sh makes), timed round by round, interleaved (tests/python/bench_forward.py).
#
#   bash tests/bench/python.sh                          # from the repository root
#   ROUNDS=7 ITERS=30 THREADS=2 bash tests/bench/python.sh
#   CPU=1 bash tests/bench/python.sh                   # both pinned to core 1 (taskset): steadier
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=../shared/fixtures
OUT=${OUT:-target/bench}
VENV=${VENV:-target/py-venv}
mkdir -p "$OUT"
[ -x "$VENV/bin/python" ] || { echo "no $VENV: run PARTS=python bash tests/run.sh first" >&2; exit 1; }
cargo build --release -p effdet-compiler --bin effdetc
./target/release/effdetc build specs/d0.yaml \
  --weights "$FIXTURES/tf_efficientdet_d0/weights.safetensors" \
  --python --name effdet-d0 -o "$OUT/py-d0" 2>&1 | tail -1
CARGO_TARGET_DIR="$OUT/target" cargo build --release --manifest-path "$OUT/py-d0/Cargo.toml" 2>&1 | tail -1
CARGO_TARGET_DIR="$PWD/target/py-target" "$VENV/bin/python" -m pip install --quiet \
  --force-reinstall --no-deps "$OUT/py-d0"
PIN=()
[ -n "${CPU:-}" ] && PIN=(taskset -c "$CPU")
"${PIN[@]}" "$VENV/bin/python" tests/python/bench_forward.py "$OUT/target/release/effdet-d0" \
  --rounds "${ROUNDS:-5}" --iters "${ITERS:-20}" --threads "${THREADS:-1}"
