#!/usr/bin/env python3
"""Batch object detection on Ray Data with a model compiled by `effdetc build --python`.

Reads a folder of images (PNG, JPEG, ...), runs `Model.detect_batch` in a pool of Ray actors
(one `Model` per actor, created in the actor), and writes the detections to Parquet, one row
per detection:

    image (string, the image's path), x1, y1, x2, y2 (float32, image pixels),
    score (float32), class (int32, 1-based COCO id), label (string)

Images without detections have no rows. Locally (a Ray instance confined to this machine,
nothing leaves the loopback interface):

    RAY_USAGE_STATS_ENABLED=0 python examples/ray_detect.py IMAGES_DIR OUT_DIR

On a running Ray cluster (the package must be installed on every node, or shipped with
`--runtime-env-pip`):

    python examples/ray_detect.py s3://bucket/images s3://bucket/detections --address ray://head:10001

OUT_DIR is a directory of Parquet files (as `Dataset.write_parquet` writes them); read it
with `pyarrow.parquet.read_table(OUT_DIR)` or `pandas.read_parquet(OUT_DIR)`.
"""

from __future__ import annotations

import argparse
import importlib
import os

import numpy as np
import pyarrow as pa

# The Parquet schema: one row per detection.
SCHEMA = pa.schema([
    ("image", pa.string()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
    ("x2", pa.float32()),
    ("y2", pa.float32()),
    ("score", pa.float32()),
    ("class", pa.int32()),
    ("label", pa.string()),
])


def rows(paths, found) -> pa.Table:
    """The detections of each image in `paths` (`found`, as `detect_batch` gives them) as rows
    of SCHEMA, in order: best first within an image."""
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for path, dets in zip(paths, found):
        for d in dets:
            cols["image"].append(str(path))
            for key, v in zip(("x1", "y1", "x2", "y2"), d["bbox"]):
                cols[key].append(v)
            cols["score"].append(d["score"])
            cols["class"].append(d["class"])
            cols["label"].append(d["label"])
    return pa.table(cols, schema=SCHEMA)


class Detector:
    """A Ray Data actor: one compiled model, created once in the actor's process."""

    def __init__(self, module: str, threads: int, score_threshold: float | None,
                 max_detections: int | None):
        self.model = importlib.import_module(module).Model(threads=threads)
        self.options = {"score_threshold": score_threshold, "max_detections": max_detections}

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # `image` is one uint8 [H, W, 3] array per row (an object array when sizes differ).
        images = [np.ascontiguousarray(img, dtype=np.uint8) for img in batch["image"]]
        found = self.model.detect_batch(images, **self.options)
        return rows(batch["path"], found)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", help="a folder (or file, or glob, or list of paths) of images; "
                                   "local or any filesystem Ray Data reads (s3://, gs://, ...)")
    p.add_argument("out", help="output directory of Parquet files (created)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. ray://head:10001 or auto); "
                        "default: start a local instance bound to 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local instance (default: all); ignored with --address")
    p.add_argument("--module", default="effdet_d0",
                   help="the Python module effdetc built (default: effdet_d0)")
    p.add_argument("--actors", type=int, default=2,
                   help="most model actors, one Model each (default: 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per model, and CPUs reserved per actor (default: 1)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images per map_batches call (default: 4)")
    p.add_argument("--score-threshold", type=float, default=0.4,
                   help="keep detections scoring at least this (default: 0.4; negative: keep all)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="most detections per image (default: the spec's, 100)")
    p.add_argument("--runtime-env-pip", nargs="*", default=None,
                   help="with --address: pip requirements (e.g. a wheel of the model) "
                        "to install on the cluster's workers")
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data

    if args.address:
        runtime_env = {"pip": args.runtime_env_pip} if args.runtime_env_pip else None
        ray.init(address=args.address, runtime_env=runtime_env)
    else:
        # Confined to this machine: no dashboard, every service on the loopback interface.
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        threshold = None if args.score_threshold < 0 else args.score_threshold
        ds = ray.data.read_images(args.images, mode="RGB", include_paths=True)
        dets = ds.map_batches(
            Detector,
            fn_constructor_kwargs={
                "module": args.module,
                "threads": args.threads,
                "score_threshold": threshold,
                "max_detections": args.max_detections,
            },
            batch_size=args.batch_size,
            batch_format="numpy",
            # From one actor up to --actors as CPUs free up: a fixed pool that took every
            # CPU would leave none for reading the images and writing the Parquet files.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=args.actors),
            num_cpus=args.threads,
        )
        dets.write_parquet(args.out)
    finally:
        ray.shutdown()
    print(f"ray_detect: wrote detections to {args.out}")


if __name__ == "__main__":
    main()
