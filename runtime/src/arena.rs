//! Views into a model's arena and weights, for generated code.
//!
//! Generated code keeps every intermediate tensor in one `Vec<f32>` arena at offsets the
//! compiler planned. An op reads some regions and writes another; the planner guarantees the
//! written region overlaps none of the read ones, which [`split`] checks and turns into
//! ordinary borrows, so generated code needs no `unsafe`.

use crate::prelude::*;

/// Splits `arena` into shared views of the `inputs` regions and a mutable view of the
/// `output` region, each given as `(offset, len)` in f32 elements.
///
/// # Panics
/// If a region is out of bounds or an input overlaps the output: both are compiler bugs, and
/// a loud failure beats silently wrong results.
pub fn split<const N: usize>(
    arena: &mut [f32],
    inputs: [(usize, usize); N],
    output: (usize, usize),
) -> ([&[f32]; N], &mut [f32]) {
    let (out_start, out_len) = output;
    let out_end = out_start + out_len;
    assert!(
        out_end <= arena.len(),
        "output region {output:?} outside the arena"
    );
    let (before, rest) = arena.split_at_mut(out_start);
    let (out, after) = rest.split_at_mut(out_len);
    let (before, after): (&[f32], &[f32]) = (before, after);
    let views = inputs.map(|(start, len)| {
        if start + len <= out_start {
            &before[start..start + len]
        } else if start >= out_end {
            &after[start - out_end..start - out_end + len]
        } else {
            panic!("input region ({start}, {len}) overlaps output region {output:?}")
        }
    });
    (views, out)
}

/// A mutable view of one region (for in-place ops).
pub fn region(arena: &mut [f32], offset: usize, len: usize) -> &mut [f32] {
    &mut arena[offset..offset + len]
}

/// Copies region `from` to region `to` (non-overlapping).
pub fn copy(arena: &mut [f32], from: usize, to: usize, len: usize) {
    let ([src], dst) = split(arena, [(from, len)], (to, len));
    dst.copy_from_slice(src);
}

/// 64-byte aligned storage for embedded weights: `include_bytes!` alone guarantees only
/// byte alignment, and the weights are read in place as `f32`.
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

/// The packed weights as `f32`, read in place.
///
/// # Panics
/// If `bytes` is not 4-byte aligned or its length is not a multiple of 4 (an [`Aligned`]
/// static of a packed weights file is both).
#[allow(unsafe_code)]
pub fn as_f32(bytes: &'static [u8]) -> &'static [f32] {
    assert!(
        bytes.as_ptr().align_offset(core::mem::align_of::<f32>()) == 0
            && bytes.len().is_multiple_of(4),
        "packed weights must be 4-byte aligned with a length multiple of 4"
    );
    // SAFETY: the pointer is aligned for f32 and the length is a whole number of f32s
    // (checked above); every bit pattern is a valid f32; the data is 'static and immutable.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) }
}

/// Packed weights (little-endian f32) from bytes; `bytes.len()` must be a multiple of 4
/// (the caller checks it against the model's size first).
pub fn f32s_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Reads a packed weights file (little-endian f32) into memory.
#[cfg(feature = "std")]
pub fn read_f32_file(path: &std::path::Path, expected_len: usize) -> std::io::Result<Vec<f32>> {
    use std::io::Read;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let file = std::fs::File::open(path)?;
    // The size first, so a wrong file (another model's, a device, a huge one) is refused
    // before anything is read; then a bounded read, in case it changes meanwhile.
    let meta = file.metadata()?;
    let want = (expected_len as u64)
        .checked_mul(4)
        .ok_or_else(|| bad("size overflows".into()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() != want {
        return Err(bad(format!(
            "holds {} bytes, this model's packed weights are {want}: the file belongs to another model or build",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(want as usize);
    file.take(want + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != want {
        return Err(bad(format!(
            "changed while being read ({} bytes, expected {want})",
            bytes.len()
        )));
    }
    Ok(f32s_from_le_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_disjoint_views() {
        let mut arena: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let ([a, b], y) = split(&mut arena, [(0, 2), (8, 2)], (3, 4));
        assert_eq!(a, [0.0, 1.0]);
        assert_eq!(b, [8.0, 9.0]);
        y.fill(-1.0);
        assert_eq!(arena[3..7], [-1.0; 4]);
        copy(&mut arena, 0, 8, 2);
        assert_eq!(arena[8..], [0.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlap_is_refused() {
        let mut arena = vec![0.0; 10];
        let _ = split(&mut arena, [(2, 3)], (4, 2));
    }

    static BYTES: Aligned<[u8; 8]> = Aligned([0, 0, 128, 63, 0, 0, 0, 64]);

    #[test]
    fn aligned_bytes_read_as_f32() {
        assert_eq!(as_f32(&BYTES.0), [1.0, 2.0]);
    }
}
