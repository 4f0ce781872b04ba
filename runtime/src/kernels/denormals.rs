//! Denormal (subnormal) floats flushed to zero while a forward pass runs.
//!
//! Why: on Intel cores an instruction that reads or produces a denormal takes a ~100-cycle
//! microcode assist per vector. A network whose activations wander that low (a Keras D0
//! export with random weights: SE gates of 1e-38) ran 7–8× slower (616 vs 77 ms on a Xeon;
//! AMD cores barely notice). Denormals (< 1.2e-38) are far under any detector's tolerance,
//! so fast engines flush them (TensorFlow in every op); effdet does, during a forward pass.
//!
//! [`FlushDenormals`] sets the thread's flush-to-zero and denormals-are-zero modes (x86-64:
//! MXCSR.FTZ|DAZ; aarch64: FPCR.FZ) and puts the previous mode back when dropped, so the
//! caller's thread leaves `forward` as it entered. A pool region hands the calling thread's
//! mode to its workers ([`mode`]/[`set_mode`]), so every thread of a region computes the
//! same bits. Elsewhere (other architectures) the mode is a no-op value.
//!
//! This module and the thread pool are the runtime's `unsafe` outside SIMD: reading and
//! writing the control register takes inline assembly. Rust code is compiled for the
//! default floating-point environment; the only effect of these modes is that a denormal
//! result is 0 at run time (where constant folding would have kept it), and the kernels
//! have no denormal constants to fold.

/// The thread's floating-point control bits (an opaque value; 0 where unsupported). On
/// x86-64 MXCSR's six sticky exception flags are not part of it: they are status, not mode,
/// and setting a mode keeps them as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(u64);

#[cfg(target_arch = "x86_64")]
/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
const FLUSH: u64 = 0x8040;

#[cfg(target_arch = "x86_64")]
/// MXCSR's exception flags (bits 0–5).
const STATUS: u32 = 0x3f;

#[cfg(target_arch = "aarch64")]
/// FPCR.FZ (bit 24): flush inputs and results to zero.
const FLUSH: u64 = 1 << 24;

#[cfg(target_arch = "x86_64")]
/// MXCSR as it is, exception flags included.
#[inline]
fn mode_with_status() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: `stmxcsr` stores the 4-byte MXCSR (SSE, part of every x86-64 CPU) to the
    // address of a live, aligned local; it changes nothing else.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

/// The calling thread's current mode.
#[inline]
pub fn mode() -> Mode {
    #[cfg(target_arch = "x86_64")]
    return Mode(u64::from(mode_with_status() & !STATUS));
    #[cfg(target_arch = "aarch64")]
    {
        let fpcr: u64;
        // SAFETY: reading FPCR is allowed at EL0 and has no side effect.
        unsafe {
            core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
        Mode(fpcr)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Mode(0)
}

/// Sets the calling thread's mode (a value [`mode`] returned, possibly with [`flushing`]).
#[inline]
pub fn set_mode(m: Mode) {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = (mode_with_status() & STATUS) | m.0 as u32;
        // SAFETY: loads control bits read by `stmxcsr` with at most the FTZ/DAZ bits added
        // and the current exception flags: no reserved bit set, so `ldmxcsr` cannot fault;
        // it changes how later SSE/AVX arithmetic treats denormals and nothing else (see
        // the module doc).
        unsafe {
            core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: writes back FPCR as read by `mrs` with at most FZ added (allowed at EL0); it
    // changes how later floating-point arithmetic treats denormals and nothing else.
    unsafe {
        core::arch::asm!("msr fpcr, {}", in(reg) m.0, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = m;
}

/// `m` with denormals flushed to zero.
#[inline]
pub fn flushing(m: Mode) -> Mode {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return Mode(m.0 | FLUSH);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    m
}

/// Flushes denormals to zero on this thread until dropped, then restores the previous
/// mode. The generated `forward` holds one for the whole pass.
#[derive(Debug)]
#[must_use = "denormals are flushed only while the guard lives"]
pub struct FlushDenormals {
    saved: Mode,
}

impl FlushDenormals {
    /// Starts flushing on the calling thread.
    pub fn new() -> FlushDenormals {
        let saved = mode();
        let wanted = flushing(saved);
        if wanted != saved {
            set_mode(wanted);
        }
        FlushDenormals { saved }
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        FlushDenormals::new()
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        if mode() != self.saved {
            set_mode(self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hint::black_box;

    /// A product whose exact value (1e-40) is denormal.
    fn tiny_product() -> f32 {
        black_box(1e-20f32) * black_box(1e-20f32)
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn flushes_while_held_and_restores_the_mode() {
        let before = mode();
        assert!(tiny_product() > 0.0, "denormals are kept by default");
        {
            let _g = FlushDenormals::new();
            assert_eq!(tiny_product(), 0.0);
            {
                // Nested guards restore to the outer one's (flushing) mode.
                let _inner = FlushDenormals::new();
                assert_eq!(tiny_product(), 0.0);
            }
            assert_eq!(tiny_product(), 0.0);
        }
        assert_eq!(mode(), before);
        assert!(tiny_product() > 0.0);
    }

    #[test]
    fn normal_arithmetic_is_unchanged() {
        let a = black_box(1.5e-19f32) * black_box(3.0e-19f32);
        let _g = FlushDenormals::new();
        assert_eq!(black_box(1.5e-19f32) * black_box(3.0e-19f32), a);
    }
}
