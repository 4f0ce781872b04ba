"""Builds the D0 Python package once per session and hands it to the tests.

The package is what a user gets: `effdetc build specs/d0.yaml --weights <fixture> --python
-o DIR`, then `pip install DIR` into this (virtual) environment. `tests/run.sh` runs pytest
from its venv (`target/py-venv`); run by hand:

    target/py-venv/bin/python -m pytest tests/python

Environment: EFFDET_FIXTURES (default ../shared/fixtures from the repository root);
EFFDET_PY_CRATE (default target/py-crates/effdet-d0, where the crate is generated);
EFFDETC (an effdetc binary to use; default: cargo builds target/debug/effdetc);
EFFDET_PY_NO_BUILD=1 uses the installed `effdet_d0` as it is (no effdetc, no pip).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("EFFDET_FIXTURES", ROOT.parent / "shared" / "fixtures"))
D0 = FIXTURES / "tf_efficientdet_d0"
CRATE = Path(os.environ.get("EFFDET_PY_CRATE", ROOT / "target" / "py-crates" / "effdet-d0"))
# Shared by every maturin build of the tests, so compiled dependencies are reused.
CARGO_TARGET = ROOT / "target" / "py-target"
PHOTO = ROOT / "tests" / "data" / "grace_hopper.jpg"


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def effdetc() -> str:
    path = os.environ.get("EFFDETC")
    if not path:
        # The dev profile (the compiler is optimized in it too): after `cargo test` this is
        # already built.
        _run(["cargo", "build", "-p", "effdet-compiler", "--bin", "effdetc"])
        path = str(ROOT / "target" / "debug" / "effdetc")
    return path


def build_and_install(crate: Path, *extra: str) -> None:
    """effdetc build specs/d0.yaml --weights <fixture> --python [extra] -o crate, then pip
    install the crate directory into this environment."""
    if sys.prefix == sys.base_prefix:
        pytest.exit(
            "tests/python installs the generated package with pip: run it from a virtual "
            "environment (tests/run.sh makes target/py-venv), or set EFFDET_PY_NO_BUILD=1",
            returncode=2,
        )
    if not (D0 / "weights.safetensors").is_file():
        pytest.exit(f"no fixture weights at {D0} (set EFFDET_FIXTURES)", returncode=2)
    _run([
        effdetc(), "build", "specs/d0.yaml", "--weights", str(D0 / "weights.safetensors"),
        "--python", *extra, "-o", str(crate),
    ])
    env = dict(os.environ, CARGO_TARGET_DIR=str(CARGO_TARGET))
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
          str(crate)], env=env)
    importlib.invalidate_caches()


@pytest.fixture(scope="session")
def mod():
    """The installed `effdet_d0` module (built from the fixture weights)."""
    if os.environ.get("EFFDET_PY_NO_BUILD") != "1":
        build_and_install(CRATE)
    return importlib.import_module("effdet_d0")


@pytest.fixture(scope="session")
def mod_b2():
    """D0 compiled with --batch 2, as the package `effdet_d0_b2`."""
    if os.environ.get("EFFDET_PY_NO_BUILD") != "1":
        build_and_install(CRATE.parent / "effdet-d0-b2", "--batch", "2", "--name", "effdet-d0-b2")
    return importlib.import_module("effdet_d0_b2")


@pytest.fixture(scope="session")
def model(mod):
    return mod.Model()


@pytest.fixture(scope="session")
def x():
    return np.load(D0 / "input.npy")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from PIL import Image

    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("RGB"))
