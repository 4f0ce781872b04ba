//! The pool's threads as the operating system sees them (`/proc/self/task`): one thread
//! starts none, `n` threads start `n − 1` workers once (not per region), resizing replaces
//! them and dropping the pool joins them. One test in its own binary, so that no other
//! test's threads are counted.
//!
//! A joined thread leaves `/proc/self/task` a little after `join` returns (the kernel
//! reaps it after waking the joiner; under qemu-user much later), so counts that must
//! drop are awaited for up to ten seconds: a worker that is never joined still fails.

#![cfg(target_os = "linux")]

use effdet_runtime::kernels::Pool;

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// The thread count once it has settled at `want`, or the last count seen after ten seconds.
fn threads_settled(want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = threads_now();
        if now == want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn workers_start_once_resize_and_are_joined_on_drop() {
    let base = threads_now();
    let mut pool = Pool::new(1);
    assert_eq!(threads_now(), base, "one thread starts no worker");
    pool.set_threads(3);
    assert_eq!(threads_now(), base + 2);
    let mut out = vec![0.0f32; 1 << 20];
    for round in 0..100 {
        pool.par()
            .for_each_chunk(&mut out, 4096, usize::MAX, |i, c| {
                c.fill((i + round) as f32)
            });
    }
    assert_eq!(threads_now(), base + 2, "regions start no thread");
    pool.set_threads(2);
    assert_eq!(
        threads_settled(base + 1),
        base + 1,
        "resizing joins the old workers"
    );
    pool.set_threads(1);
    assert_eq!(threads_settled(base), base);
    pool.set_threads(4);
    assert_eq!(threads_now(), base + 3);
    drop(pool);
    assert_eq!(
        threads_settled(base),
        base,
        "dropping the pool joins its workers"
    );
}
