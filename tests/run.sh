#!/usr/bin/env bash
# The test command (README "Quick start"; .ci/run runs exactly this): format, lints, the Rust
# tests, then the Python part. Prints each part's duration; stops at the first part that
# fails.
#
#   bash tests/run.sh                 # from anywhere in the repository
#   PARTS="python" bash tests/run.sh  # a subset: fmt clippy test python aarch64
#
# The Python part makes a virtual environment in target/py-venv (once; PYTHON picks the
# interpreter, default python3, 3.11 or newer) and installs tests/python/requirements.txt into
# it (maturin, pytest, numpy, pillow, pyarrow, ray[data]); the suite then builds effdetc,
# generates the D0 crate with --python from the fixture weights and pip-installs it (maturin
# compiles it into target/py-target, so later runs reuse the compiled dependencies), and
# runs tests/python (the Ray Data example included, on a local 2-CPU Ray instance bound to
# 127.0.0.1, usage stats off).
#
# The aarch64 part runs last (tests/aarch64.sh): it sources ../shared/tools/aarch64-env.sh,
# which replaces the compiler for its shell, so it runs in a subshell with its own target
# directory (target/aarch64); the runtime's tests (NEON kernels against the scalar reference)
# and the D0 golden run under qemu-aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-fmt clippy test python aarch64}
PYTHON=${PYTHON:-python3}
VENV=target/py-venv

# Each part is one command or an && chain: a part runs in an `||` context, where `set -e`
# does not apply.
python_part() {
  { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } &&
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r tests/python/requirements.txt &&
    RAY_USAGE_STATS_ENABLED=0 PYTHONDONTWRITEBYTECODE=1 \
      "$VENV/bin/python" -m pytest tests/python -q -p no:cacheprovider
}

summary=()
report() {
  echo
  echo "tests/run.sh: durations"
  for line in "${summary[@]}"; do echo "  $line"; done
}
trap report EXIT

for part in $PARTS; do
  echo "=== $part"
  start=$SECONDS
  case $part in
    fmt) cargo fmt --all --check ;;
    clippy) cargo clippy --workspace --all-targets -- -D warnings ;;
    test) cargo test --workspace ;;
    python) python_part ;;
    aarch64) bash tests/aarch64.sh ;;
    *) echo "tests/run.sh: unknown part '$part' (fmt, clippy, test, python, aarch64)" >&2; false ;;
  esac || {
    summary+=("$(printf '%-7s FAILED after %d s' "$part" $((SECONDS - start)))")
    exit 1
  }
  summary+=("$(printf '%-7s %5d s' "$part" $((SECONDS - start)))")
  echo "=== $part: $((SECONDS - start)) s"
done
summary+=("$(printf '%-7s %5d s' total "$SECONDS")")
