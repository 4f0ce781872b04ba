//! Static memory planning: every intermediate tensor gets an offset in one arena.
//!
//! The interface follows TVM's USMP: buffers with sizes and live ranges in, offsets out; the
//! algorithm behind [`Planner`] can change without touching the rest of the compiler.

/// One buffer to place: `size` elements, live from step `first` to step `last` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub size: usize,
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    fn overlaps_in_time(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Assigns offsets so that buffers whose lifetimes overlap never overlap in memory.
pub trait Planner {
    /// One offset per buffer (in elements), in input order.
    fn assign(&self, buffers: &[Buffer]) -> Vec<usize>;
}

/// Largest buffers first, each at the lowest offset that does not collide with an already
/// placed buffer live at the same time. Simple, and within a few percent of optimal on
/// chain-like networks.
#[derive(Clone, Copy, Debug, Default)]
pub struct GreedyBySize {
    /// Offsets are rounded up to a multiple of this many elements (16 f32 = 64 bytes, so
    /// every tensor starts on a cache line).
    pub align: usize,
}

impl Planner for GreedyBySize {
    fn assign(&self, buffers: &[Buffer]) -> Vec<usize> {
        let align = self.align.max(1);
        let mut order: Vec<usize> = (0..buffers.len()).collect();
        // Size descending, then earlier first: deterministic.
        order.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].size), buffers[i].first, i));
        let mut offsets = vec![0usize; buffers.len()];
        let mut placed: Vec<usize> = Vec::new();
        for i in order {
            let b = buffers[i];
            // Occupied intervals of the buffers live at the same time, by start.
            let mut busy: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&j| buffers[j].overlaps_in_time(&b))
                .map(|&j| (offsets[j], offsets[j] + buffers[j].size))
                .collect();
            busy.sort_unstable();
            let mut offset = 0;
            for (start, end) in busy {
                if offset + b.size <= start {
                    break;
                }
                offset = offset.max(end.div_ceil(align) * align);
            }
            offsets[i] = offset;
            placed.push(i);
        }
        offsets
    }
}

/// Arena size (elements) an assignment needs.
pub fn arena_len(buffers: &[Buffer], offsets: &[usize]) -> usize {
    buffers
        .iter()
        .zip(offsets)
        .map(|(b, o)| o + b.size)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(buffers: &[Buffer], offsets: &[usize]) {
        for (i, a) in buffers.iter().enumerate() {
            for (j, b) in buffers.iter().enumerate().skip(i + 1) {
                if a.overlaps_in_time(b) {
                    let disjoint =
                        offsets[i] + a.size <= offsets[j] || offsets[j] + b.size <= offsets[i];
                    assert!(disjoint, "buffers {i} and {j} collide");
                }
            }
        }
    }

    #[test]
    fn chain_reuses_memory() {
        // x0 -> x1 -> x2 -> x3: each live only across one step, so two slots suffice.
        let buffers: Vec<Buffer> = (0..4)
            .map(|i| Buffer {
                size: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let offsets = GreedyBySize { align: 16 }.assign(&buffers);
        check(&buffers, &offsets);
        assert_eq!(arena_len(&buffers, &offsets), 2 * 112 - 12);
    }

    #[test]
    fn random_lifetimes_never_collide() {
        let mut state = 7u64;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % m
        };
        let buffers: Vec<Buffer> = (0..200)
            .map(|_| {
                let first = next(100);
                Buffer {
                    size: 1 + next(1000),
                    first,
                    last: first + next(20),
                }
            })
            .collect();
        let offsets = GreedyBySize { align: 16 }.assign(&buffers);
        check(&buffers, &offsets);
        assert!(offsets.iter().all(|o| o % 16 == 0));
    }
}
