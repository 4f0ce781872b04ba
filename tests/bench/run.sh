#!/usr/bin/env bash
# The speed benchmark: effdet's generated crates against ONNX Runtime 1.32 on the same
# models and weights, batch 1, fp32, 1 and 2 intra-op threads, interleaved in one run:
#   - D0 from specs/d0.yaml with the fixture weights (ONNX Runtime runs the fixture's
#     model.onnx, the same weights);
#   - Lite0, PyTorch-native efficientdet_d0 and the Keras (xuannianz) D0 through tf2onnx,
#     each from its ONNX export.
# Prints per model effdet/ORT and each engine's 2-thread/1-thread ratio. Also reports the
# D0 crate's release build time and its arena vs naive bytes. Measure with nothing else
# running: the 2-thread figures need both cores.
#
#   bash tests/bench/run.sh            # from the repository root
#   ROUNDS=5 ITERS=30 bash tests/bench/run.sh
#   MODELS=d0 bash tests/bench/run.sh  # a subset: d0, lite0, pt_d0, keras_d0
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=../shared/fixtures
OUT=${OUT:-target/bench}
MODELS=${MODELS:-d0 lite0 pt_d0 keras_d0}
mkdir -p "$OUT"
python3 -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '1.32.0')" 2>/dev/null \
  || pip install --quiet "onnxruntime==1.32.0" numpy
cargo build --release -p effdet-compiler --bin effdetc
EFFDETC=./target/release/effdetc

# name, how effdetc builds it, the ONNX file ORT runs
declare -A ARGS ONNX
ARGS[d0]="specs/d0.yaml --weights $FIXTURES/tf_efficientdet_d0/weights.safetensors"
ONNX[d0]=$FIXTURES/tf_efficientdet_d0/model.onnx
ARGS[lite0]="$FIXTURES/tf_efficientdet_lite0_seed5/model.onnx"
ONNX[lite0]=$FIXTURES/tf_efficientdet_lite0_seed5/model.onnx
ARGS[pt_d0]="$FIXTURES/efficientdet_d0_seed5/model.onnx"
ONNX[pt_d0]=$FIXTURES/efficientdet_d0_seed5/model.onnx
ARGS[keras_d0]="$FIXTURES/keras_d0_seed5/model.onnx"
ONNX[keras_d0]=$FIXTURES/keras_d0_seed5/model.onnx

for m in $MODELS; do
  # shellcheck disable=SC2086
  $EFFDETC build ${ARGS[$m]} --name "bench-$m" -o "$OUT/bench-$m" 2>&1 | tail -1
  # shellcheck disable=SC2086
  $EFFDETC inspect ${ARGS[$m]%% --weights*} --json > "$OUT/$m.inspect.json"
  start=$(date +%s.%N)
  CARGO_TARGET_DIR="$OUT/target" cargo build --release --manifest-path "$OUT/bench-$m/Cargo.toml" 2>&1 | tail -1
  end=$(date +%s.%N)
  echo "bench-$m: release build $(python3 -c "print(f'{$end - $start:.1f}')") s (shared target dir $OUT/target)"
done
python3 - "$OUT/d0.inspect.json" <<'PY' 2>/dev/null || true
import json, sys
j = json.load(open(sys.argv[1]))
print(f"D0: arena_bytes {j.get('arena_bytes')} vs naive_bytes {j.get('naive_bytes')}; conv MACs {j['macs']}")
PY
for m in $MODELS; do
  MACS=$(python3 -c "import json; print(json.load(open('$OUT/$m.inspect.json'))['macs'])")
  echo
  echo "## $m"
  python3 tests/bench/compare.py --bin "$OUT/target/release/bench-$m" --onnx "${ONNX[$m]}" \
    --macs "$MACS" --threads 1,2 --rounds "${ROUNDS:-3}" --iters "${ITERS:-20}"
done
