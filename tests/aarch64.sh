#!/usr/bin/env bash
# The aarch64 (NEON) part of the test command (tests/run.sh runs it last, as the part
# `aarch64`): cross-builds for aarch64-unknown-linux-gnu with ../shared/tools/aarch64-env.sh
# (Debian's rustc 1.96 and its aarch64 std, the aarch64 linker, qemu-user) and runs under
# qemu-aarch64:
#   1. the runtime's unit and integration tests (its vector primitives on each instruction
#      set the CPU has, NEON included), then the compiler's kernel tests (`kernels::`: every
#      op kernel against its scalar reference on each instruction set, small shapes; and
#      `tests/no_alloc.rs`), then the runtime built without std (no_std) for aarch64;
#   2. the D0 golden: `effdetc build specs/d0.yaml` with the fixture weights, the crate built
#      for aarch64, its binary run under `qemu-aarch64 -L /usr/aarch64-linux-gnu` on the
#      fixture input (it must say isa=Neon), the outputs compared with the fixture by
#      `compare-outputs` (the golden tests' tolerance rule).
# The cross environment replaces the compiler for the whole shell, so it lives in a subshell,
# with its own target directory (target/aarch64). Binaries are linked statically (crt-static):
# a dynamically linked one loads the sysroot's ld.so with the multiarch libc6:arm64, and when
# their versions differ (Debian 12 today: 2.36-8 vs 2.36-9+deb12u*) creating a thread under
# qemu spins forever; libtest runs every test on a thread of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURE=../shared/fixtures/tf_efficientdet_d0
[ -f "$FIXTURE/weights.safetensors" ] || { echo "aarch64: golden fixtures missing at $FIXTURE" >&2; exit 1; }
WORK=target/aarch64/work
rm -rf "$WORK" && mkdir -p "$WORK"

step() { echo "--- aarch64: $1"; }
lap=$SECONDS
took() { echo "--- aarch64: $1 took $((SECONDS - lap)) s"; lap=$SECONDS; }

step "generate the D0 crate with the fixture weights (x86-64 effdetc)"
cargo run -q -p effdet-compiler --bin effdetc -- build specs/d0.yaml \
  --weights "$FIXTURE/weights.safetensors" --out "$WORK/effdet-d0" --name effdet-d0
cargo build -q -p effdet-tests --bin compare-outputs
took "generation"

(
  # shellcheck source=/dev/null
  source ../shared/tools/aarch64-env.sh
  export CARGO_TARGET_DIR=$PWD/target/aarch64
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
  QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  T=aarch64-unknown-linux-gnu

  step "runtime tests under qemu (NEON primitives vs the scalar reference)"
  # --lib --tests: the doc tests would need rustdoc's aarch64 std, which rustup lacks here.
  timeout 1200 cargo test -q -p effdet-runtime --release --target $T --lib --tests
  took "runtime tests"

  step "kernel tests under qemu (the compiler's kernels: NEON vs the scalar reference, no allocation)"
  timeout 1200 cargo test -q -p effdet-compiler --release --target $T --lib kernels::
  timeout 1200 cargo test -q -p effdet-compiler --release --target $T --test no_alloc
  took "kernel tests"

  step "the runtime without std for aarch64"
  cargo build -q -p effdet-runtime --release --target $T --lib --no-default-features
  took "no_std build"

  step "D0 crate for aarch64"
  cargo build -q --release --target $T --manifest-path "$WORK/effdet-d0/Cargo.toml"
  BIN=$CARGO_TARGET_DIR/$T/release/effdet-d0
  took "D0 build"

  step "D0 golden under qemu"
  timeout 900 $QEMU "$BIN" run --input "$FIXTURE/input.npy" --out-dir "$WORK/out" 2> "$WORK/run.stderr" \
    || { cat "$WORK/run.stderr" >&2; exit 1; }
  cat "$WORK/run.stderr"
  grep -q "^isa=Neon " "$WORK/run.stderr" || { echo "aarch64: the D0 binary did not choose NEON" >&2; exit 1; }
  took "D0 under qemu"
)

step "compare with the fixture"
target/debug/compare-outputs "$WORK/out" "$FIXTURE"
