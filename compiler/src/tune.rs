//! `effdetc build --tune`: the blocking of each distinct 1×1 conv shape, timed on the
//! building machine.
//!
//! Without it the kernels block every call by a fixed rule (`conv1x1::Plan::new`:
//! pixel blocks whose slice of x fits ~256 KB of L2, 8×2 tiles on AVX-512, 4×2 or 8×1 on
//! AVX2), so a generated crate does not depend on the machine that built it. `--tune` times
//! the candidates for every distinct `(cin, cout, hw)` of the plan's 1×1 convs (pixel block,
//! whether x is copied per block, the AVX2 tile) on one thread with random data, and keeps
//! a candidate where it beats the rule by more than [`MARGIN`]; the choices go to
//! `tuning.json` in the crate, and `--tuning FILE` applies such a file again without timing
//! (same file, same crate, byte for byte). A choice changes only the blocking: the values a
//! conv computes are the same bit for bit, and a crate built on one machine runs its
//! choices only where the CPU takes the instruction set they were timed with.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::kernels::conv1x1::{self, Plan as ConvPlan, Tile, Tuning};
use effdet_runtime::kernels::{Act, Isa, Par};
use serde::{Deserialize, Serialize};

use crate::plan::{Kernel, Plan};

/// A candidate must be this much faster than the fixed rule's blocking to replace it
/// (timing noise on a shared machine is a few percent).
pub const MARGIN: f64 = 0.03;

/// The contents of `tuning.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningFile {
    /// The instruction set the choices were timed with (`Avx512`, `Avx2`, `Neon`, `Scalar`).
    pub isa: String,
    /// One entry per distinct 1×1 conv shape, in `(cin, cout, hw)` order.
    pub conv1x1: Vec<Conv1x1Choice>,
}

/// The blocking chosen for one 1×1 conv shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv1x1Choice {
    pub cin: usize,
    pub cout: usize,
    pub hw: usize,
    /// Pixels per block.
    pub block: usize,
    /// Copy each block of x (padded row stride) before the tiles read it.
    pub pack_x: bool,
    /// Register tile: `8x2` (AVX-512, NEON), `8x1` or `4x2` (AVX2).
    pub tile: String,
    /// Median microseconds of one call with the fixed rule's blocking, and with this one
    /// (as measured; for the reader, not used).
    pub default_us: f64,
    pub tuned_us: f64,
}

impl TuningFile {
    /// Reads and checks a tuning file; errors name the file and, for JSON errors, the line
    /// and column.
    pub fn read(path: &Path) -> Result<TuningFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the tuning file: {e}", path.display()))?;
        let file: TuningFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a tuning file: {e}", path.display()))?;
        file.check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file)
    }

    /// Pretty JSON with a final newline (what `tuning.json` holds).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a tuning file serializes");
        s.push('\n');
        s
    }

    fn check(&self) -> Result<(), String> {
        parse_isa(&self.isa)?;
        let mut seen = BTreeMap::new();
        for (i, c) in self.conv1x1.iter().enumerate() {
            let at = format!("conv1x1[{i}] ({}→{} @{})", c.cin, c.cout, c.hw);
            parse_tile(&c.tile).map_err(|e| format!("{at}: {e}"))?;
            if c.block == 0 || c.cin == 0 || c.cout == 0 || c.hw == 0 {
                return Err(format!("{at}: block, cin, cout and hw must be positive"));
            }
            // A generated call carries the block in 32 bits of its const parameter
            // (`conv1x1::tuned`); a block covers at most the plane anyway.
            if c.block > u32::MAX as usize {
                return Err(format!("{at}: block {} is above 2³² − 1", c.block));
            }
            if let Some(j) = seen.insert((c.cin, c.cout, c.hw), i) {
                return Err(format!("{at}: the same shape as conv1x1[{j}]"));
            }
        }
        Ok(())
    }

    /// The runtime's tuning for each shape whose choice differs from the fixed rule's (the
    /// others need no code of their own).
    pub fn overrides(&self) -> BTreeMap<(usize, usize, usize), Tuning> {
        let isa = parse_isa(&self.isa).expect("checked when read");
        self.conv1x1
            .iter()
            .filter_map(|c| {
                let t = Tuning {
                    isa,
                    block: c.block,
                    pack_x: c.pack_x,
                    tile: parse_tile(&c.tile).expect("checked when read"),
                };
                let default = ConvPlan::new(isa, c.cin, c.cout, c.hw, 1);
                (default.tuned(isa, &t) != default).then_some(((c.cin, c.cout, c.hw), t))
            })
            .collect()
    }
}

fn parse_isa(s: &str) -> Result<Isa, String> {
    Ok(match s {
        "Avx512" => Isa::Avx512,
        "Avx2" => Isa::Avx2,
        "Neon" => Isa::Neon,
        "Scalar" => Isa::Scalar,
        _ => return Err(format!("isa `{s}`: expected Avx512, Avx2, Neon or Scalar")),
    })
}

fn parse_tile(s: &str) -> Result<Tile, String> {
    Ok(match s {
        "8x2" => Tile::R8V2,
        "8x1" => Tile::R8V1,
        "4x2" => Tile::R4V2,
        _ => return Err(format!("tile `{s}`: expected 8x2, 8x1 or 4x2")),
    })
}

fn tile_name(t: Tile) -> &'static str {
    match t {
        Tile::R8V2 => "8x2",
        Tile::R8V1 => "8x1",
        Tile::R4V2 => "4x2",
    }
}

/// The distinct `(cin, cout, hw)` of the plan's 1×1 convs that take a blocking (the
/// channels-last head convs and those inside a depthwise conv block their own way).
pub fn conv_shapes(plan: &Plan) -> Vec<(usize, usize, usize)> {
    let mut shapes: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match s.kernel {
            Kernel::Conv1x1 {
                cin,
                cout,
                hw,
                nhwc: false,
                ..
            } => Some((cin, cout, hw)),
            _ => None,
        })
        .collect();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
}

/// Sets the blocking of every 1×1 conv of `plan` whose shape `file` overrides; returns how
/// many convs it set.
pub fn apply(plan: &mut Plan, file: &TuningFile) -> usize {
    let overrides = file.overrides();
    let mut n = 0;
    for s in &mut plan.steps {
        if let Kernel::Conv1x1 {
            cin,
            cout,
            hw,
            nhwc: false,
            tuning,
            ..
        } = &mut s.kernel
        {
            *tuning = overrides.get(&(*cin, *cout, *hw)).copied();
            n += usize::from(tuning.is_some());
        }
    }
    n
}

/// Times the candidates of every conv shape of `plan` with `isa` on one thread, each call
/// with caches as a model leaves them (see `tune_shape`); `progress` gets a line per shape.
pub fn tune(plan: &Plan, isa: Isa, progress: &mut dyn FnMut(&str)) -> TuningFile {
    let shapes = conv_shapes(plan);
    let mut out = Vec::with_capacity(shapes.len());
    for (i, &(cin, cout, hw)) in shapes.iter().enumerate() {
        let c = tune_shape(isa, cin, cout, hw);
        progress(&format!(
            "tuning 1×1 conv {}/{}: {cin}→{cout} @{hw} px: block {}, {}, tile {}: {:.0} µs ({:.2}× the fixed rule)",
            i + 1,
            shapes.len(),
            c.block,
            if c.pack_x { "x copied" } else { "x in place" },
            c.tile,
            c.tuned_us,
            c.tuned_us / c.default_us
        ));
        out.push(c);
    }
    TuningFile {
        isa: format!("{isa:?}"),
        conv1x1: out,
    }
}

/// The candidates for one shape: pixel blocks of 64 to 1024 (and the whole plane), x
/// copied or read in place, and on AVX2 both tiles.
fn candidates(isa: Isa, cin: usize, cout: usize, hw: usize) -> Vec<ConvPlan> {
    let base = ConvPlan::new(isa, cin, cout, hw, 1);
    let tiles: &[Tile] = match isa {
        Isa::Avx2 => &[Tile::R4V2, Tile::R8V1],
        _ => &[base.tile],
    };
    let mut blocks: Vec<usize> = [64, 128, 256, 512, 1024]
        .into_iter()
        .filter(|&b| b < hw)
        .collect();
    blocks.push(hw);
    let mut out = vec![base];
    for &tile in tiles {
        for &block in &blocks {
            for pack_x in [true, false] {
                let p = ConvPlan {
                    tile,
                    block,
                    pack_x,
                    ..base
                };
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn tune_shape(isa: Isa, cin: usize, cout: usize, hw: usize) -> Conv1x1Choice {
    // Deterministic data in [-1, 1): the timing does not depend on the values (no
    // denormals, no NaN).
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    };
    let x: Vec<f32> = (0..cin * hw).map(|_| next()).collect();
    let w: Vec<f32> = (0..cout * cin).map(|_| next()).collect();
    let w = conv1x1::pack(&w, cout, cin);
    let bias: Vec<f32> = (0..cout).map(|_| next()).collect();
    let mut y = vec![0.0f32; cout * hw];
    let plans = candidates(isa, cin, cout, hw);
    let mut call = |p: ConvPlan| {
        conv1x1::conv1x1_planned(
            isa,
            Par::serial(),
            &x,
            &w,
            &bias,
            None,
            &mut y,
            cin,
            cout,
            hw,
            Act::None,
            p,
        )
    };
    // In a model, x was just written by the op before and the weights were last read a
    // forward pass ago: both arrive from L3 or memory, not from a hot L1/L2 (where a
    // back-to-back loop would time them, and pick blockings that lose in the model). So
    // each sample is one call after 4 MiB of other writes evict the core's caches.
    let mut evict = vec![0u8; 4 << 20];
    let t0 = Instant::now();
    call(plans[0]);
    let samples = if t0.elapsed().as_secs_f64() > 0.02 {
        3
    } else {
        15
    };
    // Samples interleaved across candidates, so all see the same noise.
    let mut times = vec![Vec::with_capacity(samples); plans.len()];
    for s in 0..samples {
        for (p, t) in plans.iter().zip(&mut times) {
            evict.fill(s as u8);
            std::hint::black_box(&mut evict);
            let start = Instant::now();
            call(*p);
            t.push(start.elapsed().as_secs_f64());
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    let default_s = medians[0];
    let (mut best, mut best_s) = (0, default_s);
    for (i, &m) in medians.iter().enumerate().skip(1) {
        if m < best_s && m < default_s * (1.0 - MARGIN) {
            (best, best_s) = (i, m);
        }
    }
    let p = plans[best];
    Conv1x1Choice {
        cin,
        cout,
        hw,
        block: p.block,
        pack_x: p.pack_x,
        tile: tile_name(p.tile).to_string(),
        default_us: (default_s * 1e7).round() / 10.0,
        tuned_us: (best_s * 1e7).round() / 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!("{{\"isa\": \"Avx2\", \"conv1x1\": [{entries}]}}")
    }

    fn entry(block: usize, tile: &str) -> String {
        format!(
            "{{\"cin\": 96, \"cout\": 24, \"hw\": 6400, \"block\": {block}, \"pack_x\": false, \
             \"tile\": \"{tile}\", \"default_us\": 10.0, \"tuned_us\": 9.0}}"
        )
    }

    fn read(text: &str) -> Result<TuningFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tuning.json");
        std::fs::write(&path, text).unwrap();
        TuningFile::read(&path)
    }

    #[test]
    fn reads_what_it_writes() {
        let f = read(&file(&entry(128, "8x1"))).unwrap();
        assert_eq!(f.conv1x1[0].block, 128);
        assert_eq!(read(&f.to_json()).unwrap(), f);
        let o = f.overrides();
        let t = o[&(96, 24, 6400)];
        assert_eq!(
            (t.isa, t.block, t.pack_x, t.tile),
            (Isa::Avx2, 128, false, Tile::R8V1)
        );
    }

    #[test]
    fn a_choice_equal_to_the_rule_needs_no_override() {
        let rule = ConvPlan::new(Isa::Avx2, 96, 24, 6400, 1);
        let e = format!(
            "{{\"cin\": 96, \"cout\": 24, \"hw\": 6400, \"block\": {}, \"pack_x\": {}, \
             \"tile\": \"{}\", \"default_us\": 1.0, \"tuned_us\": 1.0}}",
            rule.block,
            rule.pack_x,
            tile_name(rule.tile)
        );
        assert!(read(&file(&e)).unwrap().overrides().is_empty());
    }

    #[test]
    fn bad_files_say_where_and_what() {
        let cases = [
            ("{\"isa\": \"Avx2\",\n \"conv1x1\": [}", "line 2 column"),
            (&*file(&entry(128, "16x1")), "tile `16x1`"),
            (&*file(&entry(0, "8x1")), "must be positive"),
            (&*file(&entry(1 << 32, "8x1")), "block 4294967296 is above"),
            (
                &*file(&format!("{},{}", entry(64, "8x1"), entry(128, "4x2"))),
                "the same shape as conv1x1[0]",
            ),
            ("{\"isa\": \"Sse\", \"conv1x1\": []}", "isa `Sse`"),
            (
                "{\"isa\": \"Avx2\", \"conv1x1\": [], \"extra\": 1}",
                "unknown field `extra`",
            ),
        ];
        for (text, want) in cases {
            let e = read(text).unwrap_err();
            assert!(e.contains("tuning.json") && e.contains(want), "{e}");
        }
        let e = TuningFile::read(Path::new("/nonexistent/tuning.json")).unwrap_err();
        assert!(e.contains("cannot read the tuning file"), "{e}");
    }

    #[test]
    fn tunes_a_small_shape_to_a_valid_choice() {
        let isa = Isa::detect();
        let c = tune_shape(isa, 16, 24, 300);
        assert!(c.default_us > 0.0 && c.tuned_us > 0.0 && c.tuned_us <= c.default_us);
        assert!(c.block >= 64 || c.block == 300, "{c:?}");
        parse_tile(&c.tile).unwrap();
        let f = TuningFile {
            isa: format!("{isa:?}"),
            conv1x1: vec![c],
        };
        f.check().unwrap();
    }
}
