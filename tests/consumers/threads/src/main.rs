//! Checks the generated D0 crate's thread pool from the outside, on the fixture input:
//!
//! 1. outputs at 2 and 3 threads are bit-identical to 1 thread, and within tolerance of
//!    the fixture;
//! 2. after warm-up, a whole `forward` allocates nothing at 1 and 2 threads (a counting
//!    global allocator counts every thread's allocations);
//! 3. an injected panic in a task (`effdet_runtime`'s test hook, on a worker or the caller)
//!    gives `Err(Error::Panic)` at 1 and 2 threads, and the next forward succeeds with the
//!    same outputs; `detect` likewise;
//! 4. thread counts changing between forwards, and the model moved to another thread;
//! 5. in a child made by `fork` (as Python's multiprocessing does) the model restarts its
//!    workers and gives the same outputs.
//!
//! Usage: `consumer-threads FIXTURE_DIR`; prints `ok <check>` lines.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use effdet_d0::{Error, Model};

// (`check_detections` is for the other consumers.)
#[allow(dead_code)]
#[path = "../../common/fixture.rs"]
mod fixture;

/// The system allocator, counting allocations of every thread.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is an atomic counter increment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every output, concatenated in `OUTPUT_NAMES` order.
fn forward(model: &mut Model, input: &[f32]) -> Result<Vec<f32>, Error> {
    let outputs = model.forward(input)?;
    Ok(effdet_d0::OUTPUT_NAMES
        .iter()
        .flat_map(|n| outputs.get(n).expect("every output exists").iter().copied())
        .collect())
}

/// Bit equality (NaN-safe: compares bit patterns), naming the first difference.
fn same_bits(what: &str, a: &[f32], b: &[f32]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: {} values vs {}", a.len(), b.len()));
    }
    match a
        .iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
    {
        None => Ok(()),
        Some(i) => Err(format!("{what}: value {i} differs: {} vs {}", a[i], b[i])),
    }
}

fn run() -> Result<(), String> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: consumer-threads FIXTURE_DIR")?,
    );
    if std::env::args().nth(2).is_some_and(|a| a == "load") {
        let total = std::env::args()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .ok_or("usage: consumer-threads FIXTURE_DIR load CALLS")?;
        return load(total);
    }
    let (_, input) = fixture::read_npy(&dir.join("input.npy"))?;
    let err = |e: Error| e.to_string();

    // 1. Bit-identical at 1, 2 and 3 threads, and right.
    let mut model = Model::new();
    let reference = forward(&mut model, &input).map_err(err)?;
    {
        let outputs = model.forward(&input).map_err(err)?;
        fixture::check_all(&dir, |name| {
            Some((outputs.shape(name)?, outputs.get(name)?))
        })?;
    }
    for threads in [2, 3, 1, 3, 2] {
        model.set_threads(threads);
        let ours = forward(&mut model, &input).map_err(err)?;
        same_bits(&format!("{threads} threads vs 1"), &ours, &reference)?;
    }
    println!("ok bit-identical at 1, 2 and 3 threads");

    // 2. No allocation per forward after warm-up, at 1 and 2 threads.
    for threads in [1, 2] {
        model.set_threads(threads);
        for _ in 0..2 {
            model.forward(&input).map_err(err)?;
        }
        for round in 0..3 {
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            model.forward(&input).map_err(err)?;
            let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
            if n != 0 {
                return Err(format!(
                    "forward at {threads} threads allocated {n} times after warm-up (round {round})"
                ));
            }
        }
    }
    println!("ok no allocation per forward at 1 and 2 threads");

    // 3. A panic inside becomes Error::Panic; the model stays usable.
    let (width, height, pixels) = fixture::synthetic_image();
    let image = effdet_d0::Image {
        width,
        height,
        channels: 3,
        data: &pixels,
    };
    let mut options = effdet_d0::detect_options();
    options.score_threshold = Some(0.0);
    let want = model.detect(&image, &options).map_err(err)?;
    if want.is_empty() {
        return Err("detect at threshold 0 found nothing".into());
    }
    for threads in [1, 2] {
        model.set_threads(threads);
        // Task 1 of the first region runs on the caller at 1 thread and on a worker at 2.
        for nth in [1, 2, 40] {
            effdet_runtime::kernels::pool::inject_panic(nth);
            match model.forward(&input) {
                Err(Error::Panic(message)) if message.contains("injected") => {}
                Err(e) => return Err(format!("{threads} threads: expected Error::Panic, got {e}")),
                Ok(_) => return Err(format!("{threads} threads: a panic was lost")),
            }
            let ours = forward(&mut model, &input).map_err(err)?;
            same_bits(
                &format!("forward after a panic, {threads} threads"),
                &ours,
                &reference,
            )?;
        }
        effdet_runtime::kernels::pool::inject_panic(5);
        match model.detect(&image, &options) {
            Err(Error::Panic(_)) => {}
            other => return Err(format!("detect: expected Error::Panic, got {other:?}")),
        }
        let found = model.detect(&image, &options).map_err(err)?;
        if found != want {
            return Err(format!("detect after a panic at {threads} threads differs"));
        }
    }
    println!("ok panics surface as Error::Panic at 1 and 2 threads; the model stays usable");

    // 4. Thread counts changing between forwards, the model moved between threads.
    let (mut model, input, reference) = std::thread::spawn(move || {
        for threads in [4, 1, 2, 2, 3] {
            model.set_threads(threads);
            let ours = forward(&mut model, &input).map_err(err)?;
            same_bits(&format!("moved, {threads} threads"), &ours, &reference)?;
        }
        Ok::<_, String>((model, input, reference))
    })
    .join()
    .map_err(|_| "the moved model's thread panicked")??;
    println!("ok moved between threads, thread count changed between forwards");

    // 5. A forked child restarts the workers (their threads are not in the child).
    model.set_threads(2);
    forward(&mut model, &input).map_err(err)?;
    // SAFETY: fork in a process whose other threads (the pool's workers) are parked; the
    // child only runs this crate's code, which restarts the workers before using them,
    // then exits without returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = match forward(&mut model, &input) {
            Ok(ours) if same_bits("child", &ours, &reference).is_ok() => 0,
            _ => 1,
        };
        // SAFETY: ends the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err("waitpid failed".into());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the forked child failed (status {status})"));
    }
    same_bits(
        "parent after fork",
        &forward(&mut model, &input).map_err(err)?,
        &reference,
    )?;
    println!("ok a forked child restarts the workers");
    Ok(())
}

/// Resident set of this process, from /proc (bytes).
fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// Varied images: sizes from tiny to larger than the input, grey, RGB and RGBA.
fn load_images() -> Vec<(usize, usize, usize, Vec<u8>)> {
    let sizes = [
        (640, 480, 3),
        (300, 200, 3),
        (1, 1, 3),
        (1000, 40, 3),
        (37, 701, 3),
        (512, 512, 1),
        (256, 320, 4),
        (96, 64, 3),
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(k, &(w, h, c))| {
            let data = (0..w * h * c)
                .map(|i| {
                    let (y, x, ch) = (i / (w * c), (i / c) % w, i % c);
                    ((x * (3 + k) + y * (5 + 2 * k) + ch * 70 + k * 31) % 256) as u8
                })
                .collect();
            (w, h, c, data)
        })
        .collect()
}

/// 4 threads, each with its own model, through `total` detect calls on varied images at
/// score threshold 0: every result non-empty and identical for the same image, and the
/// resident set flat after the first round.
fn load(total: usize) -> Result<(), String> {
    let images = load_images();
    let threads = 4;
    let per_thread = total.div_ceil(threads);
    let mut options = effdet_d0::detect_options();
    options.score_threshold = Some(0.0);
    // Reference results, one per image, from a model of its own.
    let reference: Vec<Vec<effdet_d0::Detection>> = {
        let model = Model::new();
        images
            .iter()
            .map(|(w, h, c, data)| {
                let img = effdet_d0::Image {
                    width: *w,
                    height: *h,
                    channels: *c,
                    data,
                };
                model.detect(&img, &options).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    if let Some(i) = reference.iter().position(Vec::is_empty) {
        return Err(format!("image {i}: no detection at threshold 0"));
    }
    let start = std::time::Instant::now();
    let warm = std::sync::Barrier::new(threads + 1);
    let done = std::sync::Barrier::new(threads + 1);
    let (rss_warm, rss_end) = std::thread::scope(|scope| -> Result<(u64, u64), String> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (images, reference, warm, done) = (&images, &reference, &warm, &done);
                scope.spawn(move || -> Result<usize, String> {
                    let model = Model::new();
                    let mut calls = 0;
                    // A failure is kept, not returned, so every thread reaches both barriers.
                    let mut failure = None;
                    for i in 0..per_thread {
                        // After one pass over the images, everyone waits for the RSS reading.
                        if i == images.len() {
                            warm.wait();
                        }
                        let k = (i + t) % images.len();
                        let (w, h, c, data) = &images[k];
                        let img = effdet_d0::Image {
                            width: *w,
                            height: *h,
                            channels: *c,
                            data,
                        };
                        match model.detect(&img, &options) {
                            Ok(found) if found == reference[k] => calls += 1,
                            Ok(_) => {
                                failure.get_or_insert(format!(
                                    "thread {t}, call {i}: image {k} detected differently"
                                ));
                            }
                            Err(e) => {
                                failure.get_or_insert(format!("thread {t}, call {i}: {e}"));
                            }
                        }
                    }
                    if per_thread <= images.len() {
                        warm.wait();
                    }
                    done.wait();
                    failure.map_or(Ok(calls), Err)
                })
            })
            .collect();
        warm.wait();
        let rss_warm = resident_bytes()?;
        done.wait();
        let rss_end = resident_bytes()?;
        let mut calls = 0;
        for h in handles {
            calls += h.join().map_err(|_| "a load thread panicked")??;
        }
        if calls < total {
            return Err(format!("{calls} calls instead of {total}"));
        }
        Ok((rss_warm, rss_end))
    })?;
    let secs = start.elapsed().as_secs_f64();
    let growth = rss_end.saturating_sub(rss_warm);
    println!(
        "load: {} detect calls on {threads} threads in {secs:.1} s ({:.1} calls/s); resident {:.1} MiB after warm-up, {:.1} MiB at the end",
        per_thread * threads,
        (per_thread * threads) as f64 / secs,
        rss_warm as f64 / (1 << 20) as f64,
        rss_end as f64 / (1 << 20) as f64
    );
    // Allocator noise aside, nothing may accumulate per call.
    if growth > 8 << 20 {
        return Err(format!(
            "the resident set grew by {:.1} MiB after warm-up",
            growth as f64 / (1 << 20) as f64
        ));
    }
    println!("ok load: identical non-empty detections per image, resident set flat");
    Ok(())
}
