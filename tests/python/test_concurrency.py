"""One Model from several Python threads (the model's lock, the GIL released) and models in
worker processes (created in the worker, or inherited through fork)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np

import conftest


def test_two_threads_share_one_model(mod, x, photo):
    m = mod.Model(threads=2)
    want_out = m.forward(x)
    want_dets = m.detect(photo, score_threshold=0)
    results: dict[int, list] = {0: [], 1: []}
    errors = []
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[i].append(("forward", m.forward(x)))
                results[i].append(("detect", m.detect(photo, score_threshold=0)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in (0, 1):
        assert len(results[i]) == 6
        for kind, got in results[i]:
            if kind == "detect":
                assert got == want_dets
            else:
                for name, v in want_out.items():
                    np.testing.assert_array_equal(got[name], v)


def test_the_gil_is_released_while_the_network_runs(mod, x):
    m = mod.Model()
    m.forward(x)  # first call: settles the arena
    t0 = time.perf_counter()
    m.forward(x)
    forward_s = time.perf_counter() - t0
    done = threading.Event()

    def run() -> None:
        for _ in range(3):
            m.forward(x)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    # This loop needs the GIL: if forward held it, the loop would stall for a whole call.
    longest, last = 0.0, time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    t.join()
    assert longest < 0.5 * forward_s, (
        f"the main thread stalled {longest * 1e3:.1f} ms (forward takes {forward_s * 1e3:.1f} ms)"
    )


def _detect_in_worker(args):
    path, threads = args
    import effdet_d0  # imported in the worker, as a user would
    from PIL import Image

    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    return effdet_d0.Model(threads=threads).detect(image, score_threshold=0)


def test_models_created_in_worker_processes(model, photo):
    want = model.detect(photo, score_threshold=0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        got = pool.map(_detect_in_worker, [(str(conftest.PHOTO), 1), (str(conftest.PHOTO), 2)])
    assert got == [want, want]


_INHERITED = {}


def _detect_with_inherited_model(_):
    m, photo = _INHERITED["model"], _INHERITED["photo"]
    return m.detect(photo, score_threshold=0)


def test_a_model_inherited_through_fork(mod, photo):
    # A model with worker threads, used before the fork: the child starts its own threads.
    m = mod.Model(threads=2)
    want = m.detect(photo, score_threshold=0)
    _INHERITED.update(model=m, photo=photo)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map(_detect_with_inherited_model, range(2))
    assert got == [want, want]
    assert m.detect(photo, score_threshold=0) == want
