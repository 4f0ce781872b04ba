#!/usr/bin/env bash
# Batches: images/s of D0 (specs/d0.yaml, fixture weights) compiled with --batch 1, 4 and 8,
# on 1 and 2 threads. Every (batch, threads) pair is timed once per round, the pairs
# interleaved and the rounds repeated, so a noisy machine slows them all alike; the table
# gives each pair's median over the rounds and its speed-up over batch 1 at the same
# thread count.
#
#   bash tests/bench/batch.sh                     # from the repository root
#   ROUNDS=7 BATCHES="1 2 4 8" bash tests/bench/batch.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=../shared/fixtures
OUT=${OUT:-target/bench}
BATCHES=${BATCHES:-1 4 8}
mkdir -p "$OUT"
cargo build --release -p effdet-compiler --bin effdetc
for n in $BATCHES; do
  ./target/release/effdetc build specs/d0.yaml \
    --weights "$FIXTURES/tf_efficientdet_d0/weights.safetensors" \
    --batch "$n" --name "bench-d0-b$n" -o "$OUT/bench-d0-b$n" 2>&1 | tail -1
  CARGO_TARGET_DIR="$OUT/target" cargo build --release --manifest-path "$OUT/bench-d0-b$n/Cargo.toml" 2>&1 | tail -1
done
python3 - "$OUT/target/release" "${ROUNDS:-5}" $BATCHES <<'PY'
import statistics, subprocess, sys
bins, rounds, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
rates = {}
for r in range(rounds):
    for n in batches:
        for t in (1, 2):
            # About 1.5 s of work per timing, whatever the batch.
            iters = max(3, 24 // n)
            out = subprocess.run([f"{bins}/bench-d0-b{n}", "bench", "--iters", str(iters), "--threads", str(t)],
                                 check=True, capture_output=True, text=True).stdout
            rate = float(next(l for l in out.splitlines() if l.startswith("images_per_s=")).split("=")[1])
            rates.setdefault((n, t), []).append(rate)
    print(f"round {r + 1}/{rounds} done", file=sys.stderr)
print("| batch | images/s, 1 thread | vs batch 1 | images/s, 2 threads | vs batch 1 |")
print("|---:|---:|---:|---:|---:|")
base = {t: statistics.median(rates[(batches[0], t)]) for t in (1, 2)}
for n in batches:
    cells = []
    for t in (1, 2):
        m = statistics.median(rates[(n, t)])
        cells += [f"{m:.1f}", f"{m / base[t]:.2f}"]
    print(f"| {n} | " + " | ".join(cells) + " |")
PY
