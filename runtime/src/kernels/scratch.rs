//! Per-thread scratch buffers, reused from call to call, so that kernels allocate nothing
//! once they have run (the product requirement: `Model::forward` allocates nothing per
//! inference).
//!
//! # Design
//! * [`take::<T>(len)`](take) returns a [`Buf`]: `len` elements of `T` starting at a 64-byte
//!   boundary, borrowed from a pool of this thread's free buffers of `T`; dropping the `Buf`
//!   returns it to the pool. A buffer only grows, and only when a request is larger than it
//!   (amortized doubling, as `Vec`), so once every kernel of a model has run on a thread
//!   (the first forward pass: the warm-up), later calls on that thread allocate nothing.
//! * **Contents are unspecified**: a buffer holds whatever its last user left (always
//!   initialized values of `T`, never uninitialized memory). Kernels initialize what they
//!   read; in exchange no call pays for zeroing memory it overwrites anyway.
//! * **Re-entrant and nestable**: the pool is a stack of free buffers and a `Buf` owns its
//!   buffer while it lives (no `RefCell` borrow is held across user code), so a kernel may
//!   hold several buffers at once, of one type or several, and a kernel could call another
//!   that takes its own. Taken and dropped in a fixed (scoped) order, the k-th buffer held at
//!   a time is always the same one, so each one settles at the largest size any kernel asks
//!   of it, and nothing is allocated after the warm-up. (Should a kernel panic, its buffers
//!   are returned by the unwinding drops, or dropped when the thread-local is gone.)
//! * **Guard, not closure**: the hot loops that use the buffers are `#[inline(always)]`
//!   generic code inlined into `#[target_feature]` functions. A closure defined in such
//!   generic code would not inherit the caller's target features, so the API hands out a
//!   value to use in place rather than taking a closure.
//! * One pool per element type and thread (`thread_local!`): `f32` for row rings and
//!   buffers, `f64` for accumulators, `usize` for index tables, `*const f32` for row pointer
//!   tables, and kernel-private state records ([`elem!`] makes a pool; fuse keeps its
//!   per-input state in one, so a node may have any number of inputs). Threads never share buffers: the scoped threads of a parallel [`super::Par`]
//!   region are new threads, each allocating its own buffers once per region (the
//!   one-thread path starts no thread and so allocates nothing after the warm-up).
//!
//! (`conv1x1` keeps its own per-thread buffer for packed blocks of x, which also only grows;
//! its codegen proved sensitive to sharing this one.)
//!
//! Sub-buffers: a kernel needing several arrays of one type takes one buffer of
//! `Σ padded(len_i)` elements and places part `i` at `Σ_{j<i} padded(len_j)`, which keeps
//! every part's start on a 64-byte boundary.

#[cfg(feature = "std")]
use core::cell::RefCell;
use core::ops::{Deref, DerefMut};

use crate::prelude::*;

/// The alignment of every buffer start, in bytes (a cache line; one AVX-512 vector).
pub const ALIGN: usize = 64;

/// A thread's free buffers of one element type.
#[cfg(feature = "std")]
pub type Pool<T> = RefCell<Vec<Vec<T>>>;

/// An element type with a scratch pool.
pub trait Elem: Copy + 'static {
    /// The value new elements get when a buffer grows.
    const FILL: Self;
    /// Runs `f` on this thread's pool of free buffers of `Self`; `None` where there is no
    /// pool (during thread teardown, or in a `no_std` build, where buffers are allocated
    /// per call and freed when dropped).
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> Option<R>;
}

/// A per-thread value (`static NAME: T = INIT;`) reached with `NAME.with_borrow_mut(|v| …)`:
/// a `thread_local!` `RefCell` with `std`; without `std` (one thread, no thread-locals) a
/// fresh `INIT` for each call, so what it caches is rebuilt per call. (Two definitions, so
/// that the runtime's `std` feature decides, not the feature set of the crate expanding it.)
#[cfg(feature = "std")]
#[macro_export]
#[doc(hidden)]
macro_rules! per_thread {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        ::std::thread_local! {
            $(#[$m])*
            static $name: ::core::cell::RefCell<$t> = const { ::core::cell::RefCell::new($init) };
        }
    };
}

/// See the `std` definition.
#[cfg(not(feature = "std"))]
#[macro_export]
#[doc(hidden)]
macro_rules! per_thread {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        $(#[$m])*
        static $name: $crate::kernels::scratch::PerCall<$t> =
            $crate::kernels::scratch::PerCall::new(|| $init);
    };
}

/// [`per_thread!`]'s storage without `std`: no storage, a new value per call.
#[cfg(not(feature = "std"))]
pub struct PerCall<T>(fn() -> T);

#[cfg(not(feature = "std"))]
impl<T> PerCall<T> {
    /// A value made by `init` on each use.
    pub const fn new(init: fn() -> T) -> Self {
        PerCall(init)
    }

    /// `f` on a fresh value.
    pub fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut (self.0)())
    }
}

/// Implements [`Elem`] for `$t` with a per-thread pool (one definition per value of the
/// runtime's `std` feature, as for `per_thread!`).
#[cfg(feature = "std")]
#[macro_export]
#[doc(hidden)]
macro_rules! scratch_elem {
    ($t:ty, $fill:expr) => {
        impl $crate::kernels::scratch::Elem for $t {
            const FILL: Self = $fill;
            fn with_pool<R>(
                f: impl FnOnce(&mut $crate::model::prelude::Vec<$crate::model::prelude::Vec<Self>>) -> R,
            ) -> Option<R> {
                ::std::thread_local! {
                    static POOL: $crate::kernels::scratch::Pool<$t> =
                        const { ::core::cell::RefCell::new($crate::model::prelude::Vec::new()) };
                }
                POOL.try_with(|p| f(&mut p.borrow_mut())).ok()
            }
        }
    };
}

/// See the `std` definition.
#[cfg(not(feature = "std"))]
#[macro_export]
#[doc(hidden)]
macro_rules! scratch_elem {
    ($t:ty, $fill:expr) => {
        impl $crate::kernels::scratch::Elem for $t {
            const FILL: Self = $fill;
            fn with_pool<R>(
                _: impl FnOnce(&mut $crate::model::prelude::Vec<$crate::model::prelude::Vec<Self>>) -> R,
            ) -> Option<R> {
                None
            }
        }
    };
}
pub use crate::scratch_elem as elem;

crate::scratch_elem!(f32, 0.0);
crate::scratch_elem!(f64, 0.0);
crate::scratch_elem!(usize, 0);
crate::scratch_elem!(*const f32, core::ptr::null());

/// `len` elements of `T` on a 64-byte boundary (for primitive `T`, see `aligns`), from this
/// thread's pool; returned to the pool when dropped. The contents are unspecified (see the
/// module docs).
pub struct Buf<T: Elem> {
    vec: Vec<T>,
    start: usize,
    len: usize,
}

/// A buffer of `len` elements of `T` (contents unspecified), 64-byte aligned for primitive
/// `T`. Allocates only when this thread's next free buffer is smaller than asked (or there
/// is none).
// Not inlined: kept out of the kernels' hot functions (a call per kernel call costs nothing).
#[inline(never)]
pub fn take<T: Elem>(len: usize) -> Buf<T> {
    if len == 0 {
        return Buf {
            vec: Vec::new(),
            start: 0,
            len: 0,
        };
    }
    let mut vec = T::with_pool(|p| p.pop()).flatten().unwrap_or_default();
    // Room to move the start to the next 64-byte boundary.
    let slack = if aligns::<T>() {
        ALIGN / size_of::<T>()
    } else {
        0
    };
    let need = len + slack;
    if vec.len() < need {
        vec.resize(need, T::FILL);
    }
    let start = match slack {
        0 => 0,
        _ => vec.as_ptr().align_offset(ALIGN),
    };
    debug_assert!(start <= slack, "scratch: cannot align");
    Buf { vec, start, len }
}

impl<T: Elem> Drop for Buf<T> {
    #[inline(never)]
    fn drop(&mut self) {
        if self.vec.capacity() == 0 {
            return;
        }
        let vec = core::mem::take(&mut self.vec);
        // During thread teardown the pool may be gone: then the buffer is just freed.
        let _ = T::with_pool(|p| p.push(vec));
    }
}

impl<T: Elem> Deref for Buf<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        &self.vec[self.start..self.start + self.len]
    }
}

impl<T: Elem> DerefMut for Buf<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

/// Whether buffers of `T` start on 64-byte boundaries: for primitive-like element types,
/// whose size is their alignment and divides 64 (`f32`, `f64`, `usize`, pointers), not for
/// kernel-private state records.
const fn aligns<T>() -> bool {
    let size = size_of::<T>();
    size != 0 && size == align_of::<T>() && ALIGN.is_multiple_of(size)
}

/// `len` rounded up to a whole number of 64-byte lines of `T` (`len` itself where `T` is
/// not aligned): the room for a part of a buffer that keeps the next part aligned.
#[inline]
pub const fn padded<T>(len: usize) -> usize {
    if !aligns::<T>() {
        return len;
    }
    let per_line = ALIGN / size_of::<T>();
    len.div_ceil(per_line) * per_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_reused_and_nestable() {
        let (p1, p2) = {
            let mut a = take::<f32>(100);
            assert_eq!(a.len(), 100);
            assert_eq!(a.as_ptr() as usize % ALIGN, 0);
            a.fill(1.0);
            // A second buffer while the first is held: a different one.
            let b = take::<f32>(10);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.as_ptr() < a.as_ptr() || b.as_ptr() >= a.as_ptr().wrapping_add(100));
            (a.as_ptr(), b.as_ptr())
        };
        // Taken again in the same order: the same buffers, the contents kept.
        let a = take::<f32>(100);
        let b = take::<f32>(10);
        assert_eq!((a.as_ptr(), b.as_ptr()), (p1, p2));
        assert!(a.iter().all(|&v| v == 1.0));
        let u = take::<usize>(3);
        assert_eq!(u.as_ptr() as usize % ALIGN, 0);
        assert!(take::<f64>(0).is_empty());
    }
}
