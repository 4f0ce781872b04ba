//! Intra-op parallelism with scoped std threads: one thread means no thread is started.

/// How many threads a kernel may use.
#[derive(Clone, Copy, Debug)]
pub struct Par {
    threads: usize,
}

impl Par {
    /// `threads` is clamped to at least 1.
    pub fn new(threads: usize) -> Par {
        Par {
            threads: threads.max(1),
        }
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Splits `out` into consecutive chunks of `chunk` elements (the last may be shorter),
    /// and calls `f(chunk_index, chunk)` for each, spread over the threads in contiguous
    /// runs of chunks. `work` is the op's cost in multiply-adds (or element operations):
    /// small ops stay on the calling thread, since starting threads costs microseconds.
    pub fn for_each_chunk<F>(&self, out: &mut [f32], chunk: usize, work: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        let chunk = chunk.max(1);
        let n = out.len().div_ceil(chunk);
        let threads = self.threads.min(n);
        if threads <= 1 || work < 200_000 {
            for (i, c) in out.chunks_mut(chunk).enumerate() {
                f(i, c);
            }
            return;
        }
        let per_thread = n.div_ceil(threads);
        std::thread::scope(|s| {
            let mut rest = out;
            let mut first = 0;
            let f = &f;
            let mut handles = Vec::new();
            while !rest.is_empty() {
                let take = (per_thread * chunk).min(rest.len());
                let (mine, tail) = rest.split_at_mut(take);
                rest = tail;
                let start = first;
                first += per_thread;
                let mut run = move || {
                    for (i, c) in mine.chunks_mut(chunk).enumerate() {
                        f(start + i, c);
                    }
                };
                if rest.is_empty() {
                    // The calling thread takes the last run instead of idling.
                    run();
                } else {
                    handles.push(s.spawn(run));
                }
            }
            for h in handles {
                let _ = h.join();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_output_once() {
        for threads in [1, 2, 3] {
            let mut out = vec![0.0f32; 1000];
            Par::new(threads).for_each_chunk(&mut out, 64, usize::MAX, |i, c| {
                for v in c.iter_mut() {
                    *v += i as f32 + 1.0;
                }
            });
            for (j, v) in out.iter().enumerate() {
                assert_eq!(*v, (j / 64) as f32 + 1.0);
            }
        }
    }
}
