//! A persistent intra-op thread pool: workers start once and are parked between parallel
//! regions, so a forward pass of a few hundred kernel calls pays a wake-up per call instead
//! of a thread start (which costs tens of microseconds and a fresh set of thread-local
//! scratch buffers).
//!
//! # Design
//! * [`Pool::new(n)`](Pool::new) starts `n − 1` workers; the calling thread is participant
//!   0 of every region. One thread starts none. [`Pool::set_threads`] resizes (joins the old
//!   workers, starts new ones); dropping the pool joins its workers.
//! * A region is `tasks` calls of one closure, `f(task)`. The assignment is static —
//!   participant `p` runs tasks `p, p + n, p + 2n, …` — so a task always runs on the same
//!   thread: results never depend on timing, and each thread's scratch buffers settle after
//!   the first forward pass (no allocation afterwards, at any thread count).
//! * Waiting: workers spin briefly on an epoch counter (regions of one forward pass follow
//!   each other within microseconds), then block on a condition variable; the caller waits
//!   for the last worker the same way.
//! * Panics: every task runs under `catch_unwind`. The region still waits for every worker,
//!   then re-raises the first panic on the calling thread (the generated `forward` turns it
//!   into `Error::Panic`). Workers survive, so the pool stays usable.
//! * Nesting and sharing: a region started while the pool is busy (a task that starts a
//!   region, or two threads sharing a pool) runs its tasks on the calling thread.
//! * `fork`: a pool records the process id that started its workers; in a child process
//!   (Python's multiprocessing forks) [`Pool::restart_after_fork`] finds the id changed and
//!   starts new workers instead of waiting for threads that do not exist there.
//!
//! This is the one module where `unsafe` serves threads rather than SIMD: a region hands
//! its workers a pointer to a closure on the caller's stack (its lifetime erased) and a way
//! to cut one output slice into disjoint parts. Both are sound because a region returns —
//! normally or by unwinding — only after every worker has finished with it.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "std")]
use {
    super::denormals,
    crate::prelude::*,
    core::any::Any,
    core::sync::atomic::AtomicBool,
    core::sync::atomic::AtomicU64,
    std::panic::{self, AssertUnwindSafe},
    std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    std::thread::JoinHandle,
    std::time::{Duration, Instant},
};

#[cfg(feature = "std")]
/// How long a parked participant spins before it blocks: longer than the serial stretches
/// of a forward pass (the small ops of the last pyramid levels run on the caller), since
/// waking a blocked worker costs tens of microseconds on a virtual machine; short enough
/// not to burn a core for long after the last forward pass.
const SPIN: Duration = Duration::from_millis(1);

#[cfg(feature = "std")]
/// The part of [`SPIN`] spent without yielding the core.
const PURE_SPIN: Duration = Duration::from_micros(50);

/// Tasks (process-wide) to run before one panics; 0: none. See [`inject_panic`].
static INJECT: AtomicUsize = AtomicUsize::new(0);

/// Test hook: the `n`-th task or chunk run from now on, by any pool or serial [`Par`] of
/// this process, panics (0 cancels). It lets tests prove that a panic inside `forward`
/// reaches the caller as an error and leaves the model usable; costs one relaxed load per
/// task otherwise.
#[doc(hidden)]
pub fn inject_panic(n: usize) {
    INJECT.store(n, Ordering::Relaxed);
}

/// The tasks of a region, in order, on the calling thread.
fn run_serial(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    for t in 0..tasks {
        injected();
        f(t);
    }
}

#[inline]
fn injected() {
    if INJECT.load(Ordering::Relaxed) != 0 && INJECT.fetch_sub(1, Ordering::Relaxed) == 1 {
        panic!("effdet: injected panic (test hook)");
    }
}

#[cfg(feature = "std")]
/// A task function with its lifetime erased (see [`Pool::run`] for why that is sound).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync + 'static),
    tasks: usize,
    /// The caller's floating-point mode (denormals flushed or not), which the workers take
    /// for the region so every thread computes the same bits.
    mode: denormals::Mode,
}

// SAFETY: `Job` only carries a pointer to a `Sync` closure between threads; the closure is
// called through a shared reference, which `Sync` allows from any thread.
#[cfg(feature = "std")]
unsafe impl Send for Job {}

#[cfg(feature = "std")]
/// What the caller and the workers share, behind a mutex.
struct State {
    /// Bumped once per region (and once to shut down).
    epoch: u64,
    job: Option<Job>,
    shutdown: bool,
    /// Workers blocked on `wake`, so that a region only signals when someone sleeps.
    sleepers: usize,
}

#[cfg(feature = "std")]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `state.epoch`, readable without the lock, for spinning.
    epoch: AtomicU64,
    /// Workers that have not yet finished the current region.
    pending: AtomicUsize,
    done_lock: Mutex<()>,
    done: Condvar,
    /// The first panic of the current region.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    panicked: AtomicBool,
}

#[cfg(feature = "std")]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing runs user code while holding these locks, so a poisoned one is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(feature = "std")]
impl Shared {
    /// Runs `job`'s tasks of participant `me` of `n`, catching panics.
    fn run_tasks(&self, job: Job, me: usize, n: usize) {
        for task in (me..job.tasks).step_by(n) {
            // SAFETY: the pointer came from a live `&dyn Fn` in `Pool::run`, which does
            // not return before every participant is done with this region.
            let f = unsafe { &*job.f };
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                injected();
                f(task)
            }));
            if let Err(payload) = r {
                let mut slot = lock(&self.panic);
                if slot.is_none() {
                    *slot = Some(payload);
                }
                self.panicked.store(true, Ordering::Release);
            }
        }
    }
}

#[cfg(feature = "std")]
/// Spins until `ready()` or [`SPIN`] has passed; `true` if ready. After the first
/// [`PURE_SPIN`] it yields between checks, so that with more threads than cores (several
/// models in one process, or a thread count above the core count) the thread it waits for
/// gets the core.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            core::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited > SPIN {
            return ready();
        }
        if waited > PURE_SPIN {
            std::thread::yield_now();
        }
    }
}

#[cfg(feature = "std")]
fn worker(shared: Arc<Shared>, me: usize, n: usize) {
    let mut seen = 0u64;
    loop {
        if !spin_until(|| shared.epoch.load(Ordering::Acquire) != seen) {
            let mut st = lock(&shared.state);
            while st.epoch == seen {
                st.sleepers += 1;
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                st.sleepers -= 1;
            }
        }
        let (job, epoch, shutdown) = {
            let st = lock(&shared.state);
            (st.job, st.epoch, st.shutdown)
        };
        if shutdown {
            return;
        }
        seen = epoch;
        if let Some(job) = job {
            if denormals::mode() != job.mode {
                denormals::set_mode(job.mode);
            }
            shared.run_tasks(job, me, n);
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one out wakes the caller, should it be blocked.
            let _g = lock(&shared.done_lock);
            shared.done.notify_one();
        }
    }
}

#[cfg(feature = "std")]
/// Started workers and the process that started them.
struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    pid: u32,
}

#[cfg(feature = "std")]
impl Workers {
    fn start(threads: usize) -> Option<Workers> {
        if threads <= 1 {
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                epoch: 0,
                job: None,
                shutdown: false,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panic: Mutex::new(None),
            panicked: AtomicBool::new(false),
        });
        let handles = (1..threads)
            .map(|me| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("effdet-{me}"))
                    .spawn(move || worker(s, me, threads))
                    .expect("effdet pool: cannot start a worker thread")
            })
            .collect();
        Some(Workers {
            shared,
            handles,
            pid: std::process::id(),
        })
    }

    fn stop(self) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            st.epoch += 1;
            self.shared.epoch.store(st.epoch, Ordering::Release);
            self.shared.wake.notify_all();
        }
        for h in self.handles {
            // Workers catch task panics, so a join error is impossible; nothing to report.
            let _ = h.join();
        }
    }
}

/// Intra-op threads: the caller plus `threads − 1` parked workers.
pub struct Pool {
    threads: usize,
    #[cfg(feature = "std")]
    workers: Option<Workers>,
    /// One region at a time; a region started while busy runs serially.
    #[cfg(feature = "std")]
    busy: AtomicBool,
}

impl Pool {
    /// A pool of `threads` participants (clamped to at least 1): starts `threads − 1`
    /// workers now. (Without `std` there are no threads: always one participant.)
    pub fn new(threads: usize) -> Pool {
        #[cfg(not(feature = "std"))]
        let threads = {
            let _ = threads;
            1
        };
        let threads = threads.max(1);
        Pool {
            threads,
            #[cfg(feature = "std")]
            workers: Workers::start(threads),
            #[cfg(feature = "std")]
            busy: AtomicBool::new(false),
        }
    }

    /// The participant count (the calling thread included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Resizes the pool: joins the workers and starts `threads − 1` new ones (nothing
    /// changes if the count is the same).
    pub fn set_threads(&mut self, threads: usize) {
        #[cfg(not(feature = "std"))]
        let _ = threads;
        #[cfg(feature = "std")]
        self.resize(threads.max(1));
    }

    #[cfg(feature = "std")]
    fn resize(&mut self, threads: usize) {
        if threads == self.threads {
            return;
        }
        if let Some(w) = self.workers.take() {
            w.stop();
        }
        self.threads = threads;
        self.workers = Workers::start(threads);
    }

    /// In a child process after `fork`, the workers do not exist: forgets them (without
    /// touching their possibly-locked state) and starts new ones. Cheap otherwise (one
    /// `getpid`). Returns whether it restarted.
    pub fn restart_after_fork(&mut self) -> bool {
        #[cfg(not(feature = "std"))]
        return false;
        #[cfg(feature = "std")]
        match &self.workers {
            Some(w) if w.pid != std::process::id() => {
                // The handles name threads of the parent: joining or detaching them here
                // would act on threads that do not exist. Leak them with the shared state.
                core::mem::forget(self.workers.take());
                self.workers = Workers::start(self.threads);
                *self.busy.get_mut() = false;
                true
            }
            _ => false,
        }
    }

    /// A handle for kernels.
    pub fn par(&self) -> Par<'_> {
        Par {
            pool: Some(self),
            threads: self.threads,
        }
    }

    /// Runs `f(0) … f(tasks − 1)`, spread over the participants (task `t` on participant
    /// `t mod threads`, the caller being participant 0), and returns when all have run. A
    /// panic in any task is re-raised here after every task has finished.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        #[cfg(not(feature = "std"))]
        run_serial(tasks, f);
        #[cfg(feature = "std")]
        self.run_threaded(tasks, f);
    }

    #[cfg(feature = "std")]
    fn run_threaded(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let Some(w) = &self.workers else {
            return run_serial(tasks, f);
        };
        if tasks <= 1
            || self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return run_serial(tasks, f);
        }
        let shared = &*w.shared;
        // SAFETY: erases the closure's lifetime so workers can hold it. They use it only
        // between the epoch bump below and their `pending` decrement, and this function
        // waits for `pending == 0` before it returns or unwinds (the caller's own tasks run
        // under `catch_unwind`), so the closure outlives every use.
        let job = Job {
            f: unsafe {
                core::mem::transmute::<
                    *const (dyn Fn(usize) + Sync + '_),
                    *const (dyn Fn(usize) + Sync + 'static),
                >(f)
            },
            tasks,
            mode: denormals::mode(),
        };
        shared.pending.store(self.threads - 1, Ordering::Relaxed);
        {
            let mut st = lock(&shared.state);
            st.job = Some(job);
            st.epoch += 1;
            shared.epoch.store(st.epoch, Ordering::Release);
            if st.sleepers > 0 {
                shared.wake.notify_all();
            }
        }
        shared.run_tasks(job, 0, self.threads);
        if !spin_until(|| shared.pending.load(Ordering::Acquire) == 0) {
            let mut g = lock(&shared.done_lock);
            while shared.pending.load(Ordering::Acquire) != 0 {
                g = shared.done.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
        }
        lock(&shared.state).job = None;
        let payload = if shared.panicked.swap(false, Ordering::Acquire) {
            lock(&shared.panic).take()
        } else {
            None
        };
        self.busy.store(false, Ordering::Release);
        if let Some(p) = payload {
            panic::resume_unwind(p);
        }
    }
}

#[cfg(feature = "std")]
impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            if w.pid == std::process::id() {
                w.stop();
            } else {
                core::mem::forget(w);
            }
        }
    }
}

impl core::fmt::Debug for Pool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// How kernels reach the threads: a copyable handle on a [`Pool`], or serial.
#[derive(Clone, Copy, Debug)]
pub struct Par<'a> {
    pool: Option<&'a Pool>,
    threads: usize,
}

impl Par<'static> {
    /// Everything on the calling thread.
    pub fn serial() -> Par<'static> {
        Par {
            pool: None,
            threads: 1,
        }
    }
}

/// Below this many multiply-adds (or element operations) an op stays on the calling
/// thread. An empty region costs 0.3–0.4 µs with the workers spinning (AMD EPYC Zen 4), a
/// few thousand multiply-adds; 32K keeps the split ops' halves well above that. At 128K
/// the small ops of the BiFPN's and heads' 10² and 5² levels (Lite0: 64-channel depthwise
/// and 1×1 convs, weighted sums) ran on the caller while the other core waited, ~0.5 ms of
/// a 6.6 ms two-thread pass; at 32K two-thread Lite0 was 1.1% faster, D0 0.6% (interleaved
/// A/B medians of 9 rounds).
const MIN_PARALLEL_WORK: usize = 32 * 1024;

impl<'a> Par<'a> {
    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(task)` for every task in `0..tasks` side by side (see [`Pool::run`]). Tasks
    /// must be independent; each should use [`Par::serial`] for its own kernels.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        match self.pool {
            Some(p) => p.run(tasks, f),
            None => run_serial(tasks, f),
        }
    }

    /// Splits `out` into consecutive chunks of `chunk` elements (the last may be shorter),
    /// and calls `f(chunk_index, chunk)` for each, spread over the threads in contiguous
    /// runs of chunks (run `r` on participant `r`, so a chunk is always computed by the
    /// same code on the same thread). `work` is the op's cost in multiply-adds (or element
    /// operations): small ops stay on the calling thread.
    pub fn for_each_chunk<T, F>(&self, out: &mut [T], chunk: usize, work: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        self.for_each_chunk_of_images(out, 1, chunk, work, |i, _, c| f(i, c));
    }

    /// [`Par::for_each_chunk`] over a batch: `out` holds `images` equal rows (one per
    /// image), each split into chunks of `chunk` elements; `f(chunk_index, image, chunk)`
    /// runs for every chunk of every image. Chunk `i` of every image goes to the same
    /// task, which runs them one image after the other: a kernel whose chunk reads its own
    /// part of the weights (a 1×1 conv's output channels) reads it from memory once for
    /// the whole batch. With one image this is `for_each_chunk`.
    ///
    /// # Panics
    /// If `out.len()` is not a multiple of `images`.
    pub fn for_each_chunk_of_images<T, F>(
        &self,
        out: &mut [T],
        images: usize,
        chunk: usize,
        work: usize,
        f: F,
    ) where
        T: Send,
        F: Fn(usize, usize, &mut [T]) + Sync,
    {
        let images = images.max(1);
        assert!(
            out.len().is_multiple_of(images),
            "for_each_chunk_of_images: {} elements are not {images} equal images",
            out.len()
        );
        let row = out.len() / images;
        let chunk = chunk.max(1);
        let n = row.div_ceil(chunk);
        let threads = self.threads.min(n);
        if threads <= 1 || work < MIN_PARALLEL_WORK || self.pool.is_none() {
            for i in 0..n {
                for (image, r) in out.chunks_exact_mut(row).enumerate() {
                    injected();
                    f(i, image, &mut r[i * chunk..((i + 1) * chunk).min(row)]);
                }
            }
            return;
        }
        let per_run = n.div_ceil(threads);
        let runs = n.div_ceil(per_run);
        let parts = Disjoint::new(out, row, per_run * chunk);
        self.run(runs, &|r| {
            for image in 0..images {
                let part = parts.part(image, r);
                for (i, c) in part.chunks_mut(chunk).enumerate() {
                    f(r * per_run + i, image, c);
                }
            }
        });
    }
}

impl Par<'_> {
    /// [`Par::for_each_chunk`] with a second output cut in step: chunk `i` of `out`
    /// (`chunk` elements) comes with elements `[i·side_chunk, (i+1)·side_chunk)` of `side`
    /// (clamped to its length: empty past its end, so an empty `side` is allowed). For a
    /// kernel that also writes a small per-chunk result (a depthwise conv's channel means
    /// beside its output planes), on the same thread and in the same run of chunks.
    pub fn for_each_chunk_with<T, U, F>(
        &self,
        out: &mut [T],
        chunk: usize,
        side: &mut [U],
        side_chunk: usize,
        work: usize,
        f: F,
    ) where
        T: Send,
        U: Send,
        F: Fn(usize, &mut [T], &mut [U]) + Sync,
    {
        let chunk = chunk.max(1);
        let n = out.len().div_ceil(chunk);
        let threads = self.threads.min(n);
        let side_of = |s: &mut [U], i: usize| -> (usize, usize) {
            let start = i.saturating_mul(side_chunk).min(s.len());
            (start, start.saturating_add(side_chunk).min(s.len()))
        };
        if threads <= 1 || work < MIN_PARALLEL_WORK || self.pool.is_none() {
            for (i, c) in out.chunks_mut(chunk).enumerate() {
                injected();
                let (a, b) = side_of(side, i);
                f(i, c, &mut side[a..b]);
            }
            return;
        }
        let per_run = n.div_ceil(threads);
        let runs = n.div_ceil(per_run);
        let out_len = out.len();
        let side_len = side.len();
        let outs = Disjoint::new(out, out_len, per_run * chunk);
        let sides = Disjoint::new(side, side_len, per_run.saturating_mul(side_chunk));
        self.run(runs, &|r| {
            let (part, side) = (outs.part(0, r), sides.part(0, r));
            for (i, c) in part.chunks_mut(chunk).enumerate() {
                let (a, b) = side_of(side, i);
                f(r * per_run + i, c, &mut side[a..b]);
            }
        });
    }
}

impl Par<'_> {
    /// Column parts of a matrix: `out` holds rows of `row` elements (a batch of `[C][H·W]`
    /// maps, one row per channel), and part `r` is columns `[r·len, (r+1)·len)` of every
    /// row (the last part may be narrower). `f(r, cols)` runs once per part, the parts side
    /// by side; `cols.row(i)` is part `r` of row `i`. For a kernel whose work divides
    /// better by pixels than by channels (few output channels on a large plane): each
    /// thread reads and writes only its own pixels. `work` as in [`Par::for_each_chunk`].
    ///
    /// # Panics
    /// If `out.len()` is not a multiple of `row`.
    pub fn for_each_column_part<T, F>(
        &self,
        out: &mut [T],
        row: usize,
        len: usize,
        work: usize,
        f: F,
    ) where
        T: Send,
        F: Fn(usize, &mut Columns<'_, T>) + Sync,
    {
        let (row, len) = (row.max(1), len.max(1));
        assert!(
            out.len().is_multiple_of(row),
            "for_each_column_part: {} elements are not rows of {row}",
            out.len()
        );
        let parts = row.div_ceil(len);
        let rows = out.len() / row;
        let all = Disjoint::new(out, row, len);
        let part = |r: usize| {
            let start = (r * len).min(row);
            f(
                r,
                &mut Columns {
                    parts: &all,
                    part: r,
                    rows,
                    start,
                    len: len.min(row - start),
                },
            )
        };
        if self.threads.min(parts) <= 1 || work < MIN_PARALLEL_WORK || self.pool.is_none() {
            for r in 0..parts {
                injected();
                part(r);
            }
            return;
        }
        self.run(parts, &part);
    }
}

/// One part of [`Par::for_each_column_part`]: the same columns of every row.
pub struct Columns<'a, T> {
    parts: &'a Disjoint<'a, T>,
    part: usize,
    rows: usize,
    start: usize,
    len: usize,
}

impl<T> Columns<'_, T> {
    /// The first column.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No columns.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// This part's columns of row `i` (empty past the last row). `&mut self`: one row at a
    /// time, so two handles on the same columns never coexist.
    pub fn row(&mut self, i: usize) -> &mut [T] {
        self.parts.part(i, self.part)
    }
}

/// A slice of equal rows, each cut into consecutive parts of `len` elements (the last of a
/// row may be shorter), handed out by (row, index) to the tasks of one region: task `r`
/// takes part `r` of every row.
struct Disjoint<'a, T> {
    ptr: *mut T,
    rows: usize,
    row: usize,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: parts are disjoint `&mut [T]`, which may be sent to other threads for `T: Send`.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// `slice` as rows of `row` elements (its length a multiple of `row`, or one row when
    /// `row` is 0), each in parts of `len`.
    fn new(slice: &'a mut [T], row: usize, len: usize) -> Self {
        let rows = slice.len().checked_div(row).unwrap_or(0);
        debug_assert_eq!(rows * row, slice.len());
        Disjoint {
            ptr: slice.as_mut_ptr(),
            rows,
            row,
            len: len.max(1),
            _borrow: PhantomData,
        }
    }

    /// Part `r` of row `image`: its elements `[r·len, (r+1)·len)` clamped to the row (empty
    /// for a row past the end). Each (row, index) is taken by the task of that index only
    /// ([`Pool::run`] runs each task exactly once), and once, or again through
    /// [`Columns::row`]'s `&mut self` after the previous slice is gone.
    #[allow(clippy::mut_from_ref)]
    fn part(&self, image: usize, r: usize) -> &mut [T] {
        if image >= self.rows {
            return &mut [];
        }
        let start = r.saturating_mul(self.len).min(self.row);
        let end = start.saturating_add(self.len).min(self.row);
        // SAFETY: `image·row + start .. image·row + end` lies within row `image` of the
        // slice borrowed for `'a`; parts of distinct (row, index) pairs do not overlap, and
        // each index is taken by exactly one task of the region (one slice of a pair alive
        // at a time), which ends before the borrow does.
        unsafe {
            core::slice::from_raw_parts_mut(self.ptr.add(image * self.row + start), end - start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn workers_take_the_callers_denormal_mode() {
        let pool = Pool::new(2);
        // Each chunk computes a product whose exact value (1e-40) is denormal: flushed to
        // 0 on every thread while the caller holds the guard, kept on every thread after.
        let tiny = |out: &mut [f32]| {
            for v in out {
                *v = core::hint::black_box(1e-20f32) * core::hint::black_box(1e-20f32);
            }
        };
        let mut out = vec![1.0f32; 64];
        {
            let _g = denormals::FlushDenormals::new();
            pool.par()
                .for_each_chunk(&mut out, 8, usize::MAX, |_, c| tiny(c));
        }
        assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
        pool.par()
            .for_each_chunk(&mut out, 8, usize::MAX, |_, c| tiny(c));
        assert!(out.iter().all(|&v| v > 0.0), "{out:?}");
    }

    #[test]
    fn column_parts_cover_every_row_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            // 3 rows of 100 columns in parts of 32 (the last of 4).
            let mut out = vec![0u32; 300];
            pool.par()
                .for_each_column_part(&mut out, 100, 32, usize::MAX, |r, cols| {
                    assert_eq!((cols.start(), cols.rows()), (32 * r, 3));
                    assert_eq!(cols.len(), if r == 3 { 4 } else { 32 });
                    for i in 0..cols.rows() {
                        cols.row(i).iter_mut().for_each(|v| *v += r as u32 + 1);
                    }
                    assert!(cols.row(3).is_empty());
                });
            for (j, v) in out.iter().enumerate() {
                assert_eq!(
                    *v,
                    (j % 100 / 32) as u32 + 1,
                    "{threads} threads, element {j}"
                );
            }
        }
    }

    #[test]
    fn chunks_with_a_side_output_cover_both_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            // 16 chunks of 64 (the last of 40) with 2 side elements each; then an empty side.
            let mut out = vec![0u32; 1000];
            let mut side = vec![0u32; 32];
            pool.par()
                .for_each_chunk_with(&mut out, 64, &mut side, 2, usize::MAX, |i, c, s| {
                    assert_eq!(s.len(), 2, "chunk {i}");
                    c.iter_mut().for_each(|v| *v += i as u32 + 1);
                    s.iter_mut().for_each(|v| *v += i as u32 + 1);
                });
            for (j, v) in out.iter().enumerate() {
                assert_eq!(*v, j as u32 / 64 + 1, "{threads} threads, element {j}");
            }
            for (j, v) in side.iter().enumerate() {
                assert_eq!(*v, j as u32 / 2 + 1, "{threads} threads, side {j}");
            }
            pool.par().for_each_chunk_with(
                &mut out,
                64,
                &mut [0u8; 0][..],
                2,
                usize::MAX,
                |_, c, s| {
                    assert!(s.is_empty());
                    c.fill(7);
                },
            );
            assert!(out.iter().all(|&v| v == 7));
        }
    }

    #[test]
    fn chunks_cover_the_output_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut out = vec![0.0f32; 1000];
            pool.par().for_each_chunk(&mut out, 64, usize::MAX, |i, c| {
                for v in c.iter_mut() {
                    *v += i as f32 + 1.0;
                }
            });
            for (j, v) in out.iter().enumerate() {
                assert_eq!(*v, (j / 64) as f32 + 1.0);
            }
        }
    }

    #[test]
    fn chunks_of_images_cover_each_image_once_on_a_fixed_task() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut out = vec![0.0f32; 3 * 1000];
            let owner: Vec<Mutex<Option<std::thread::ThreadId>>> =
                (0..16).map(|_| Mutex::new(None)).collect();
            pool.par()
                .for_each_chunk_of_images(&mut out, 3, 64, usize::MAX, |i, image, c| {
                    assert!(c.len() == 64 || i == 15 && c.len() == 1000 - 15 * 64);
                    // Every image's chunk `i` is computed on the same thread.
                    let me = std::thread::current().id();
                    assert_eq!(*owner[i].lock().unwrap().get_or_insert(me), me);
                    for v in c.iter_mut() {
                        *v += (image * 100 + i) as f32 + 1.0;
                    }
                });
            for (j, v) in out.iter().enumerate() {
                let (image, k) = (j / 1000, j % 1000);
                assert_eq!(*v, (image * 100 + k / 64) as f32 + 1.0, "element {j}");
            }
        }
    }

    #[test]
    fn tasks_run_once_on_a_fixed_thread() {
        let pool = Pool::new(3);
        let first: Vec<Mutex<Option<std::thread::ThreadId>>> =
            (0..10).map(|_| Mutex::new(None)).collect();
        for _ in 0..50 {
            let count = AtomicUsize::new(0);
            pool.run(10, &|t| {
                count.fetch_add(1, Ordering::Relaxed);
                let me = std::thread::current().id();
                let mut seen = first[t].lock().unwrap();
                assert_eq!(*seen.get_or_insert(me), me, "task {t} moved threads");
            });
            assert_eq!(count.load(Ordering::Relaxed), 10);
        }
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(4, &|t| {
                if t == 1 {
                    panic!("task one");
                }
            })
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"task one"));
        let sum = AtomicUsize::new(0);
        pool.run(4, &|t| {
            sum.fetch_add(t, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn nested_regions_run_serially() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        pool.run(2, &|_| {
            pool.run(3, &|t| {
                sum.fetch_add(t + 1, Ordering::Relaxed);
            });
        });
        assert_eq!(sum.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn resizing_and_parking() {
        let mut pool = Pool::new(1);
        for threads in [2, 4, 1, 3, 2] {
            pool.set_threads(threads);
            assert_eq!(pool.threads(), threads);
            // Long enough apart that workers block between regions.
            for _ in 0..3 {
                let n = AtomicUsize::new(0);
                pool.run(7, &|_| {
                    n.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(n.load(Ordering::Relaxed), 7);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(!pool.restart_after_fork());
    }
}
