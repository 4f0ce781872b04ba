#!/usr/bin/env python3
"""Python `Model.forward` (numpy in, numpy arrays out, copies included) against the Rust
`bench` of the same crate, interleaved: each round runs the crate's binary
(`bench --iters N --threads T`, its median) and then N timed Python calls (their median), so a
noisy machine slows both alike. Prints each round, the medians over rounds and their ratio
(last line: overhead_percent=<Python over Rust>).

    python tests/python/bench_forward.py BENCH_BINARY [--module effdet_d0] [--rounds 5] [--iters 20] [--threads 1]

`tests/bench/python.sh` builds both from the fixture weights and runs this.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import time

import numpy as np


def rust_median_ms(binary: str, iters: int, threads: int) -> float:
    out = subprocess.run([binary, "bench", "--iters", str(iters), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1].split("=")[1])


def python_median_ms(model, x: np.ndarray, iters: int) -> float:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        outs = model.forward(x)
        times.append((time.perf_counter() - start) * 1e3)
        del outs
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("binary", help="the generated crate's binary (cargo build --release)")
    p.add_argument("--module", default="effdet_d0")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    mod = importlib.import_module(args.module)
    model = mod.Model(threads=args.threads)
    # Image-like values; the kernels' speed does not depend on them.
    x = np.random.default_rng(0).uniform(-2, 2, mod.INPUT_SHAPE).astype(np.float32)
    for _ in range(3):  # warm-up: the arena and the threads settle in the first calls
        model.forward(x)

    rust, py = [], []
    print(f"{args.module}: threads={args.threads} iters={args.iters} rounds={args.rounds}")
    print("| round | Rust bench median (ms) | Python forward median (ms) | Python / Rust |")
    print("|---:|---:|---:|---:|")
    for r in range(args.rounds):
        rust.append(rust_median_ms(args.binary, args.iters, args.threads))
        py.append(python_median_ms(model, x, args.iters))
        print(f"| {r + 1} | {rust[-1]:.2f} | {py[-1]:.2f} | {py[-1] / rust[-1]:.3f} |", flush=True)
    rm, pm = statistics.median(rust), statistics.median(py)
    ratio = statistics.median(p_ / r_ for p_, r_ in zip(py, rust))
    print(f"| median | {rm:.2f} | {pm:.2f} | {pm / rm:.3f} |")
    print(f"median of the rounds' ratios: {ratio:.3f}")
    print(f"overhead_percent={100 * (pm / rm - 1):.1f}")


if __name__ == "__main__":
    main()
