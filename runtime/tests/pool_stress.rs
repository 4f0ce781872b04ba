//! Stress of the persistent thread pool (`kernels::pool`), whose `unsafe` erases a region's
//! borrow while the workers use it: if a region could return (or unwind) before every
//! worker is done, or hand a part of the output to two tasks, these checks would see
//! corrupted or missing values, lost panics or a deadlock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use effdet_runtime::kernels::{Par, Pool};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// One region writing `index + salt` into every element through `for_each_chunk`; checks
/// every element was written exactly once, by the right chunk.
fn chunked_region(par: Par, len: usize, chunk: usize, salt: u32) {
    let mut out = vec![u32::MAX; len];
    par.for_each_chunk(&mut out, chunk, usize::MAX, |i, c| {
        for (j, v) in c.iter_mut().enumerate() {
            assert_eq!(*v, u32::MAX, "element written twice");
            *v = (i * chunk + j) as u32 ^ salt;
        }
    });
    for (j, v) in out.iter().enumerate() {
        assert_eq!(*v, j as u32 ^ salt, "element {j} of {len} (chunk {chunk})");
    }
}

#[test]
fn thousands_of_regions_of_varying_size_and_thread_counts() {
    let mut rng = Rng(0x1234_5678);
    let mut pool = Pool::new(2);
    for round in 0..5000u32 {
        if round % 500 == 0 {
            pool.set_threads(1 + rng.below(4));
        }
        let len = rng.below(3000);
        let chunk = 1 + rng.below(300);
        chunked_region(pool.par(), len, chunk, round);
        // Independent tasks, some more than the threads.
        let tasks = rng.below(9);
        let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        pool.run(tasks, &|t| {
            hits[t].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }
}

#[test]
fn panics_are_reraised_after_every_task_ends_and_the_pool_recovers() {
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads);
        for round in 0..200 {
            let (started, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let bad = round % 5;
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(5, &|t| {
                    started.fetch_add(1, Ordering::Relaxed);
                    if t == bad {
                        panic!("task {t}");
                    }
                    // The others keep going a little, using the region's borrows.
                    std::hint::black_box((0..1000).sum::<usize>());
                    finished.fetch_add(1, Ordering::Relaxed);
                })
            }));
            let payload = r.expect_err("the panic was lost");
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert_eq!(msg, format!("task {bad}"));
            // Every task that started had finished before `run` unwound (with workers, all
            // of them: a panic does not stop the others).
            let (started, finished) = (started.into_inner(), finished.into_inner());
            assert_eq!(finished, started - 1);
            if threads > 1 {
                assert_eq!(finished, 4);
            }
            chunked_region(pool.par(), 1000, 7, round as u32);
        }
    }
}

#[test]
fn a_pool_moved_between_threads_keeps_working() {
    let mut pool = Pool::new(2);
    for step in 0..20u32 {
        pool = std::thread::spawn(move || {
            chunked_region(pool.par(), 4096, 64, step);
            if step % 7 == 3 {
                pool.set_threads(3);
            }
            pool
        })
        .join()
        .unwrap();
    }
    assert_eq!(pool.threads(), 3);
}

#[test]
fn two_threads_sharing_a_pool_do_not_deadlock() {
    // A busy pool runs a second caller's region on that caller: slower, never stuck.
    let pool = Pool::new(2);
    std::thread::scope(|s| {
        for salt in 0..2 {
            let pool = &pool;
            s.spawn(move || {
                for round in 0..500 {
                    chunked_region(pool.par(), 2000, 33, salt * 1000 + round);
                }
            });
        }
    });
}
