#!/usr/bin/env python3
"""Side-by-side speed of an effdet-generated crate and ONNX Runtime on the same model.

Runs the generated binary's `bench` subcommand and an ONNX Runtime session with the same
intra-op thread count, interleaved round by round (this machine is shared and noisy: only
ratios measured in one run mean anything), and prints a table of medians, ratios and GMAC/s.

Usage: compare.py --bin BIN --onnx MODEL.onnx --macs N [--threads 1,2] [--rounds 5] [--iters 20]
"""
import argparse
import statistics
import subprocess
import sys
import time


def effdet_ms(binary, threads, iters):
    out = subprocess.run([binary, "bench", "--iters", str(iters), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("median_ms="), out
    return float(last.split("=", 1)[1])


def ort_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ort_ms(session, feed, iters):
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the generated crate's release binary")
    ap.add_argument("--onnx", required=True, help="the same model as ONNX")
    ap.add_argument("--macs", type=float, required=True, help="conv multiply-accumulates per inference")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    import numpy as np
    threads = [int(t) for t in args.threads.split(",")]
    sessions = {t: ort_session(args.onnx, t) for t in threads}
    inp = sessions[threads[0]].get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    results = {(e, t): [] for e in ("effdet", "ort") for t in threads}
    for r in range(args.rounds):
        for t in threads:
            results[("effdet", t)].append(effdet_ms(args.bin, t, args.iters))
            results[("ort", t)].append(ort_ms(sessions[t], feed, args.iters))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{e} {t}T {results[(e, t)][-1]:.1f} ms" for t in threads for e in ("effdet", "ort")),
            file=sys.stderr)
    print("| threads | effdet median ms | ONNX Runtime median ms | effdet / ORT | effdet GMAC/s | ORT GMAC/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    med = {k: statistics.median(v) for k, v in results.items()}
    for t in threads:
        ours, theirs = med[("effdet", t)], med[("ort", t)]
        print(f"| {t} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} | "
              f"{args.macs / ours / 1e6:.1f} | {args.macs / theirs / 1e6:.1f} |")
    base = threads[0]
    for t in threads[1:]:
        print(f"{t}T/{base}T: effdet {med[('effdet', t)] / med[('effdet', base)]:.2f}, "
              f"ONNX Runtime {med[('ort', t)] / med[('ort', base)]:.2f}")

if __name__ == "__main__":
    main()
