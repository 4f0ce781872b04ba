"""examples/ray_detect.py on a local Ray instance (2 CPUs, loopback only): its Parquet rows
equal direct `detect` calls, image by image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageOps

import conftest

EXAMPLE = conftest.ROOT / "examples" / "ray_detect.py"


def make_images(photo_path: Path, folder: Path, count: int = 20) -> list[Path]:
    """`count` images from the repository's photograph: resized, flipped, mirrored, some
    grayscale, PNG and JPEG."""
    folder.mkdir()
    paths = []
    with Image.open(photo_path) as im:
        base = im.convert("RGB")
    for i in range(count):
        img = base.resize((96 + 37 * i, 120 + 23 * (i % 7)))
        if i % 2:
            img = ImageOps.mirror(img)
        if i % 3 == 2:
            img = ImageOps.flip(img)
        if i % 5 == 4:
            img = img.convert("L")
        path = folder / f"img{i:02d}.{'jpg' if i % 4 == 3 else 'png'}"
        img.save(path)
        paths.append(path)
    return paths


def as_rows(dets) -> list[tuple]:
    return sorted(
        (*np.float32(d["bbox"]).tolist(), float(np.float32(d["score"])), d["class"], d["label"])
        for d in dets
    )


def test_ray_data_example_equals_direct_detect(model, tmp_path):
    paths = make_images(conftest.PHOTO, tmp_path / "images")
    out = tmp_path / "detections"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "images"), str(out),
         "--num-cpus", "2", "--actors", "2", "--batch-size", "3", "--score-threshold", "0"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = pq.read_table(out)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema == {"image": "string", "x1": "float", "y1": "float", "x2": "float",
                      "y2": "float", "score": "float", "class": "int32", "label": "string"}
    got: dict[str, list] = {}
    for r in table.to_pylist():
        got.setdefault(Path(r["image"]).name, []).append(
            (r["x1"], r["y1"], r["x2"], r["y2"], r["score"], r["class"], r["label"]))
    assert sorted(got) == sorted(p.name for p in paths)
    for path in paths:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        want = as_rows(model.detect(pixels, score_threshold=0))
        assert want, path.name
        assert sorted(got[path.name]) == want, path.name
