//! The generated D0 crate built without `std`, driven by a program without `std` either.
//!
//! Protocol (the test in `tests/consumers.rs` drives it):
//! * stdin: the input tensor, `INPUT_SHAPE` little-endian f32;
//! * stdout: every output of `forward`, in `OUTPUT_NAMES` order, as little-endian f32; then
//!   the detections on the consumers' synthetic image (`tests/consumers/common`): a u32
//!   count, then `x1 y1 x2 y2 score class` as f32 per detection;
//! * stderr: `isa=<ISA>` and one `ok …` line per check made here (weights from bytes give
//!   bit-identical outputs, wrong bytes are refused, `detect` finds something).
//!
//! Everything the program needs from the system comes from libc through `extern "C"`:
//! `posix_memalign`/`free` for the allocator, `read`/`write`, `abort`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::fmt::Write;

use effdet_d0_nostd::{Image, Model, INPUT_SHAPE, OUTPUT_NAMES};

#[link(name = "c")]
unsafe extern "C" {
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn free(ptr: *mut c_void);
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn abort() -> !;
}

/// The C library's allocator.
struct Libc;

// SAFETY: `posix_memalign` returns memory aligned to `align` (a power of two, at least the
// pointer size as it requires) and at least `size` bytes long, or fails (null is returned
// then, as `GlobalAlloc` asks); `free` releases exactly what it returned.
unsafe impl GlobalAlloc for Libc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut ptr = core::ptr::null_mut();
        let align = layout.align().max(core::mem::size_of::<usize>());
        // SAFETY: `ptr` is a valid place for the result; `align` is a power of two and a
        // multiple of the pointer size.
        match unsafe { posix_memalign(&mut ptr, align, layout.size().max(1)) } {
            0 => ptr.cast(),
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from `alloc` above (GlobalAlloc's contract).
        unsafe { free(ptr.cast()) }
    }
}

#[global_allocator]
static ALLOCATOR: Libc = Libc;

/// Writes all of `bytes` to `fd`; false on an error.
fn write_all(fd: c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice of `bytes.len()` readable bytes.
        let n = unsafe { write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Text to stderr.
struct Stderr;

impl Write for Stderr {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match write_all(2, s.as_bytes()) {
            true => Ok(()),
            false => Err(core::fmt::Error),
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Stderr, "consumer-nostd: {info}");
    // SAFETY: `abort` takes no arguments and does not return.
    unsafe { abort() }
}

// The precompiled `core` and `alloc` are built to unwind, so their landing pads name the
// personality routine and `_Unwind_Resume`. With `panic = "abort"` (this crate's profiles)
// no unwinding ever starts, so neither is ever called; they exist for the linker.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    // SAFETY: `abort` takes no arguments and does not return.
    unsafe { abort() }
}

/// Fails the program with a message.
fn fail(message: core::fmt::Arguments) -> c_int {
    let _ = writeln!(Stderr, "consumer-nostd: {message}");
    1
}

/// Reads stdin to its end.
fn read_stdin() -> Vec<u8> {
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        // SAFETY: `chunk` is a live buffer of `chunk.len()` writable bytes.
        let n = unsafe { read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            return data;
        }
        data.extend_from_slice(&chunk[..n as usize]);
    }
}

/// The packed weights the crate embeds, as bytes, for `Model::from_bytes`.
static WEIGHTS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../target/consumer-crates/effdet-d0-nostd/weights.bin"
));

#[no_mangle]
pub extern "C" fn main() -> c_int {
    let bytes = read_stdin();
    let len: usize = INPUT_SHAPE.iter().product();
    if bytes.len() != 4 * len {
        return fail(format_args!(
            "stdin holds {} bytes, the input is {} f32",
            bytes.len(),
            len
        ));
    }
    let input: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let mut model = Model::new();
    // One thread without std, whatever is asked.
    model.set_threads(2);
    let _ = writeln!(Stderr, "isa={:?}", model.isa());
    let first: Vec<f32> = match model.forward(&input) {
        Ok(outputs) => OUTPUT_NAMES
            .iter()
            .flat_map(|name| outputs.get(name).unwrap_or(&[]).iter().copied())
            .collect(),
        Err(e) => return fail(format_args!("forward: {e}")),
    };

    // The same weights from bytes: the same outputs, bit for bit.
    let mut copy = match Model::from_bytes(WEIGHTS) {
        Ok(m) => m,
        Err(e) => return fail(format_args!("from_bytes: {e}")),
    };
    match copy.forward(&input) {
        Ok(outputs) => {
            let again = OUTPUT_NAMES
                .iter()
                .flat_map(|name| outputs.get(name).unwrap_or(&[]).iter().copied());
            if !again
                .map(f32::to_bits)
                .eq(first.iter().map(|v| v.to_bits()))
            {
                return fail(format_args!("from_bytes: outputs differ from Model::new's"));
            }
        }
        Err(e) => return fail(format_args!("forward (from_bytes): {e}")),
    }
    let _ = writeln!(Stderr, "ok from_bytes: bit-identical outputs");
    match Model::from_bytes(&WEIGHTS[..WEIGHTS.len() - 4]) {
        Err(e) => {
            let _ = writeln!(Stderr, "ok from_bytes refuses short weights: {e}");
        }
        Ok(_) => return fail(format_args!("from_bytes accepted weights 4 bytes short")),
    }

    // The consumers' synthetic image (tests/consumers/common/fixture.rs).
    let (w, h) = (96usize, 64usize);
    let pixels: Vec<u8> = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / (w * 3), (i / 3) % w, i % 3);
            ((x * 7 + y * 13 + c * 50) % 256) as u8
        })
        .collect();
    let image = Image {
        width: w,
        height: h,
        channels: 3,
        data: &pixels,
    };
    let found = match model.detect(&image, &effdet_d0_nostd::detect_options()) {
        Ok(found) => found,
        Err(e) => return fail(format_args!("detect: {e}")),
    };
    if found.is_empty() {
        return fail(format_args!("detect found nothing"));
    }
    let _ = writeln!(Stderr, "ok detect: {} detections", found.len());

    let mut out: Vec<u8> = first.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.extend_from_slice(&(found.len() as u32).to_le_bytes());
    for d in &found {
        for v in d.bbox.iter().chain([&d.score]) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(d.class as f32).to_le_bytes());
    }
    if !write_all(1, &out) {
        return fail(format_args!("writing stdout failed"));
    }
    0
}
