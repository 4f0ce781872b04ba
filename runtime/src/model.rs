//! The pieces every generated `Model` shares: its error type, where its weights live, the
//! context its generated steps run in, and the view of its outputs.

use crate::prelude::*;
use core::fmt;
#[cfg(feature = "std")]
use std::panic::{catch_unwind, AssertUnwindSafe};
#[cfg(feature = "std")]
use std::path::Path;

use crate::kernels::Par;

/// What can go wrong when a generated model is created or run.
#[derive(Debug)]
pub enum Error {
    /// `forward` got an input of the wrong length.
    InputLength {
        /// `INPUT_SHAPE`'s element count.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// The packed weights file could not be used.
    Weights {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Pre- or post-processing failed (bad image, mismatched outputs).
    Detect(String),
    /// A panic inside the network or the post-processing (on any of its threads), caught:
    /// the outputs of that call are lost, the model and its threads stay usable.
    Panic(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InputLength { expected, found } => {
                write!(
                    f,
                    "input has {found} values, the model takes {expected} (INPUT_SHAPE, NCHW f32)"
                )
            }
            Error::Weights { path, message } => write!(f, "{path}: {message}"),
            Error::Detect(message) => f.write_str(message),
            Error::Panic(message) => write!(f, "internal error (a panic in the model): {message}"),
        }
    }
}

impl core::error::Error for Error {}

/// Runs `f` (a forward pass, a detection), turning a panic — on the calling thread or a
/// pool worker, which re-raises it here — into [`Error::Panic`]. The panic hook still prints
/// the message to stderr as usual. (Without `std` there is no unwinding to catch: `f` just
/// runs, and a panic goes to the program's `#[panic_handler]`.)
#[cfg(not(feature = "std"))]
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    Ok(f())
}

/// Runs `f` (a forward pass, a detection), turning a panic — on the calling thread or a
/// pool worker, which re-raises it here — into [`Error::Panic`]. The panic hook still prints
/// the message to stderr as usual.
#[cfg(feature = "std")]
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_string()
        };
        Error::Panic(message)
    })
}

/// A model's packed weights: embedded in the binary (read in place) or loaded from a file.
pub enum Weights {
    /// An aligned static in the binary.
    Embedded(&'static [f32]),
    /// Read from a packed weights file.
    Owned(Vec<f32>),
}

impl Weights {
    /// Packed weights from memory (the bytes of a `weights.bin`, little-endian f32),
    /// checking their length against the model's; `what` names them in the error.
    pub fn from_bytes(bytes: &[u8], expected_len: usize, what: &str) -> Result<Weights, Error> {
        if Some(bytes.len()) != expected_len.checked_mul(4) {
            return Err(Error::Weights {
                path: what.to_string(),
                message: format!(
                    "holds {} bytes, this model's packed weights are {}: they belong to another model or build",
                    bytes.len(),
                    expected_len.saturating_mul(4)
                ),
            });
        }
        Ok(Weights::Owned(crate::arena::f32s_from_le_bytes(bytes)))
    }

    /// Loads a packed weights file, checking its length against the model's.
    #[cfg(feature = "std")]
    pub fn from_file(path: &Path, expected_len: usize) -> Result<Weights, Error> {
        let err = |message: String| Error::Weights {
            path: path.display().to_string(),
            message,
        };
        let data =
            crate::arena::read_f32_file(path, expected_len).map_err(|e| err(e.to_string()))?;
        Ok(Weights::Owned(data))
    }

    /// The weights as one slice.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Weights::Embedded(w) => w,
            Weights::Owned(w) => w,
        }
    }
}

/// What generated steps run with: the arena, the weights, the thread budget and a small
/// scratch buffer. Not the instruction set: a generated model's block functions are
/// compiled once per instruction set (their const parameter `I`,
/// [`isa_code`](crate::kernels::isa_code)), and its forward pass picks one set of them.
pub struct Ctx<'a> {
    /// All intermediate tensors, at planned offsets.
    pub arena: &'a mut [f32],
    /// The packed weights.
    pub weights: &'a [f32],
    /// Intra-op threads.
    pub par: Par<'a>,
    /// Per-kernel temporary space (squeeze-excite's pooled vector, ...).
    pub scratch: &'a mut [f32],
}

/// One output's place in the arena.
#[derive(Clone, Copy, Debug)]
pub struct OutputSlot {
    /// The graph's output name.
    pub name: &'static str,
    /// Offset in the arena (f32 elements).
    pub offset: usize,
    /// Shape, NCHW for the head outputs.
    pub shape: &'static [usize],
}

/// The outputs of one `forward` call, borrowed from the model's arena.
pub struct Outputs<'a> {
    arena: &'a [f32],
    slots: &'static [OutputSlot],
}

impl<'a> Outputs<'a> {
    /// Wraps the arena after a forward pass.
    pub fn new(arena: &'a [f32], slots: &'static [OutputSlot]) -> Self {
        Outputs { arena, slots }
    }

    /// The output called `name`, row-major.
    pub fn get(&self, name: &str) -> Option<&'a [f32]> {
        let s = self.slots.iter().find(|s| s.name == name)?;
        let len = s.shape.iter().product::<usize>();
        self.arena.get(s.offset..s.offset + len)
    }

    /// The shape of the output called `name`.
    pub fn shape(&self, name: &str) -> Option<&'static [usize]> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.shape)
    }

    /// Every output as `(name, shape, values)`, in output order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static [usize], &'a [f32])> + '_ {
        self.slots
            .iter()
            .filter_map(move |s| Some((s.name, s.shape, self.get(s.name)?)))
    }
}

/// A generated model's mutable state (its arena, scratch and threads), shared by
/// `forward(&mut self)` and `detect(&self)`: a `Mutex` with `std` (so a model can be shared
/// between threads), a `RefCell` without (one thread).
pub struct StateCell<T> {
    #[cfg(feature = "std")]
    inner: std::sync::Mutex<T>,
    #[cfg(not(feature = "std"))]
    inner: core::cell::RefCell<T>,
}

impl<T> StateCell<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        StateCell {
            inner: value.into(),
        }
    }

    /// The state, through exclusive access (no locking).
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(feature = "std")]
        return self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(not(feature = "std"))]
        return self.inner.get_mut();
    }

    /// The state, locked for the guard's lifetime. A panic while it was held (caught as
    /// [`Error::Panic`]) does not poison it: every call rewrites what it reads.
    pub fn lock(&self) -> impl core::ops::DerefMut<Target = T> + '_ {
        #[cfg(feature = "std")]
        return self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(not(feature = "std"))]
        return self.inner.borrow_mut();
    }
}

/// What generated code uses from `alloc`, imported with a glob (`use
/// ::effdet_runtime::model::prelude::*;`): a `no_std` crate's prelude lacks them, and in a
/// `std` crate they are the same items as the standard prelude's.
pub mod prelude {
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;

    /// The `f32` methods (`exp`, `sqrt`, ...) `core` lacks, for the op kernels (`std` has them).
    #[cfg(not(feature = "std"))]
    pub use crate::math::Float as _;
}

/// One generated block function's share of a forward pass, from a generated
/// `Model::profile` (the crate binary's `bench --profile` prints them).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockTime {
    /// The function's name in the generated module (`block_7`).
    pub function: &'static str,
    /// The IR name of the first op of its first call: what it computes.
    pub first_op: &'static str,
    /// Calls per forward pass.
    pub calls: usize,
    /// Median over the profiled passes of the time of all its calls in one pass, in ms.
    pub median_ms: f64,
}

/// Times `iters` passes of `forward` per block function. `forward` runs one pass and calls
/// its argument with the function's index (into `blocks`: name, first op, calls per pass)
/// right after each call returns; the time since the previous call (or the pass's start)
/// is that function's. `usize::MAX` restarts the clock without counting (after the pass
/// copies its input in, say). Returns every function that ran, slowest first (ties by index).
/// A clock read per call costs well under a microsecond against calls of 10 µs or more.
#[cfg(feature = "std")]
pub fn profile_blocks(
    blocks: &[(&'static str, &'static str, usize)],
    iters: usize,
    mut forward: impl FnMut(&mut dyn FnMut(usize)) -> Result<(), Error>,
) -> Result<Vec<BlockTime>, Error> {
    use std::time::Instant;
    let mut samples = vec![Vec::with_capacity(iters); blocks.len()];
    let mut pass = vec![0.0f64; blocks.len()];
    for _ in 0..iters.max(1) {
        pass.fill(0.0);
        let mut last = Instant::now();
        forward(&mut |i| {
            let now = Instant::now();
            if let Some(ms) = pass.get_mut(i) {
                *ms += (now - last).as_secs_f64() * 1e3;
            }
            last = now;
        })?;
        for (s, &ms) in samples.iter_mut().zip(&pass) {
            s.push(ms);
        }
    }
    let mut out: Vec<(usize, BlockTime)> = blocks
        .iter()
        .zip(samples)
        .enumerate()
        .filter(|(_, (&(_, _, calls), _))| calls > 0)
        .map(|(i, (&(function, first_op, calls), mut s))| {
            s.sort_by(f64::total_cmp);
            let n = s.len();
            let median_ms = if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            };
            (
                i,
                BlockTime {
                    function,
                    first_op,
                    calls,
                    median_ms,
                },
            )
        })
        .collect();
    out.sort_by(|(i, a), (j, b)| b.median_ms.total_cmp(&a.median_ms).then(i.cmp(j)));
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

#[cfg(all(test, feature = "std"))]
mod profile_tests {
    use super::*;

    #[test]
    fn profile_blocks_attributes_time_to_the_block_that_just_ran() {
        let blocks = [
            ("block_0", "a", 1),
            ("block_1", "b", 2),
            ("block_2", "c", 1),
        ];
        let sleep = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
        let t = profile_blocks(&blocks, 3, |lap| {
            sleep(30);
            lap(usize::MAX);
            sleep(1);
            lap(0);
            for _ in 0..2 {
                sleep(10);
                lap(1);
            }
            sleep(5);
            lap(2);
            Ok(())
        })
        .unwrap();
        let order: Vec<&str> = t.iter().map(|b| b.function).collect();
        assert_eq!(order, ["block_1", "block_2", "block_0"]);
        assert!(t[0].median_ms >= 20.0, "{t:?}");
        assert!(
            t[1].median_ms >= 5.0 && t[1].median_ms < t[0].median_ms,
            "{t:?}"
        );
        assert!(
            t[2].median_ms >= 1.0 && t[2].median_ms < t[1].median_ms,
            "{t:?}"
        );
        assert!(t.iter().all(|b| b.median_ms.is_finite()));
        assert_eq!((t[0].calls, t[0].first_op), (2, "b"));
    }

    #[test]
    fn profile_blocks_passes_errors_on() {
        let r = profile_blocks(&[("block_0", "a", 1)], 2, |_| {
            Err(Error::Panic("boom".into()))
        });
        assert!(matches!(r, Err(Error::Panic(m)) if m == "boom"));
    }
}
