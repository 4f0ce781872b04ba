#!/usr/bin/env bash
# The D0 speed benchmark: effdet's generated crate against ONNX Runtime on the fixture's
# model.onnx, same weights, batch 1, fp32, 1 and 2 intra-op threads, interleaved in one run.
# Also reports the generated crate's cold release build time and its arena vs naive bytes.
#
#   bash tests/bench/run.sh            # from the repository root
#   ROUNDS=9 ITERS=30 bash tests/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
FIX=../shared/fixtures/tf_efficientdet_d0
OUT=${OUT:-target/bench}
mkdir -p "$OUT"
python3 -c "import onnxruntime, numpy" 2>/dev/null || pip install --quiet onnxruntime numpy
cargo build --release -p effdet-compiler --bin effdetc
./target/release/effdetc build specs/d0.yaml --weights "$FIX/weights.safetensors" -o "$OUT/effdet-d0"
./target/release/effdetc inspect specs/d0.yaml --json > "$OUT/inspect.json"
start=$(date +%s.%N)
CARGO_TARGET_DIR="$OUT/target" cargo build --release --offline --manifest-path "$OUT/effdet-d0/Cargo.toml" 2>&1 | tail -1
end=$(date +%s.%N)
echo "generated D0 crate: cold release build $(python3 -c "print(f'{$end - $start:.1f}')") s"
python3 - "$OUT/inspect.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"arena_bytes {j.get('arena_bytes')} vs naive_bytes {j.get('naive_bytes')}; conv MACs {j['macs']}")
PY
MACS=$(python3 -c "import json; print(json.load(open('$OUT/inspect.json'))['macs'])")
python3 tests/bench/compare.py --bin "$OUT/target/release/effdet-d0" --onnx "$FIX/model.onnx" \
  --macs "$MACS" --threads 1,2 --rounds "${ROUNDS:-5}" --iters "${ITERS:-20}"
