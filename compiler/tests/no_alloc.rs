//! Every kernel allocates nothing once it has run: `Model::forward` must not allocate per
//! inference, and the generated code calls exactly these kernels.
//!
//! A counting global allocator (this test binary only) counts the allocations of the
//! threads that are marked: the test's own and its pool's workers. For every instruction
//! set this CPU runs, at 1 and at 2 threads (a persistent pool), every kernel is called once
//! on EfficientDet-D0-like shapes (the warm-up: each thread's scratch buffers grow), then
//! again, each call alone: the second round must allocate nothing on any thread and give
//! bit-identical outputs (the scratch buffers then hold other kernels' leftovers, which no
//! kernel may depend on).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use effdet_compiler::kernels::conv1x1;
use effdet_compiler::kernels::dense::{conv_dense, conv_generic};
use effdet_compiler::kernels::depthwise::depthwise;
use effdet_compiler::kernels::fuse::{fuse, Sample};
use effdet_compiler::kernels::generic::{self as g, BinOp, FusionMethod, PoolKind, ReduceKind};
use effdet_compiler::kernels::se::{self, squeeze_excite};
use effdet_runtime::kernels::{Act, Isa, Par, Pool};

/// The system allocator, counting allocations per thread.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted. A const-initialized `Cell` of a plain
    /// value has no destructor: touching it never allocates or registers anything.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Allocations (and reallocations) by the counted threads.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The tests count process-wide: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a thread-local counter increment, which
// neither allocates nor touches the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
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

/// Stops counting this thread's allocations when dropped. Each test holds one, declared after
/// its `SERIAL` guard so that it drops first: once a test returns, the harness allocates on
/// its thread (the result, the report) while the next test already counts, and those
/// allocations must not land in that test's count.
struct UncountOnDrop;

impl Drop for UncountOnDrop {
    fn drop(&mut self) {
        COUNTED.with(|c| c.set(false));
    }
}

/// The allocations `f` makes on the counted threads.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// A pool for the rest of the test binary, each of whose threads (the caller, participant
/// 0, included: every region's task `p` runs on participant `p`) is counted.
fn counted_pool(threads: usize) -> &'static Pool {
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(threads)));
    pool.run(threads, &|_| COUNTED.with(|c| c.set(true)));
    pool
}

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// TF 'same' padding `[top, left, bottom, right]` of a square `n²` input.
fn same(n: usize, k: usize, s: usize) -> [usize; 4] {
    let total = ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
    let (a, b) = (total / 2, total - total / 2);
    [a, a, b, b]
}

fn out_len(n: usize, pads: [usize; 4], k: usize, s: usize) -> usize {
    (n + pads[0] + pads[2] - k) / s + 1
}

/// A kernel call writing its output into the slice it is given (and owning its inputs).
type Call = Box<dyn FnMut(&mut [f32])>;

/// One kernel call and its output from the warm-up.
struct Case {
    name: String,
    out: Vec<f32>,
    run: Call,
}

fn case(name: impl Into<String>, out_len: usize, run: impl FnMut(&mut [f32]) + 'static) -> Case {
    Case {
        name: name.into(),
        out: vec![f32::NAN; out_len],
        run: Box::new(run),
    }
}

/// Every kernel the code generator emits, on D0-like shapes (and the unusual paths).
fn cases(isa: Isa, par: Par<'static>) -> Vec<Case> {
    let mut v = Vec::new();

    // 1×1 convs: D0's expand/project shapes; 256² (a multiple of 256 pixels) takes the
    // padded-stride copy of x on AVX2; residual; tiny planes with masked tails.
    for (cin, cout, hw, res) in [
        (32, 16, 256 * 256, false),
        (24, 144, 128 * 128, false),
        (40, 240, 64 * 64, false),
        (112, 672, 32 * 32, false),
        (80, 80, 32 * 32, true),
        (320, 64, 16 * 16, false),
        (64, 810, 8 * 8, false),
        (64, 36, 5 * 5, false),
    ] {
        let x = data(cin * hw, 1);
        let w = conv1x1::pack(&data(cout * cin, 2), cout, cin);
        let b = data(cout, 3);
        let r = data(if res { cout * hw } else { 0 }, 4);
        v.push(case(
            format!("conv1x1 {cin}→{cout} @{hw} res {res}"),
            cout * hw,
            move |y| {
                let r = res.then_some(&r[..]);
                conv1x1::conv1x1(isa, par, &x, &w, &b, r, y, cin, cout, hw, Act::Swish)
            },
        ));
    }

    // Channels-last output (a TensorFlow export's heads).
    for (cin, cout, hw) in [(64, 810, 32 * 32), (64, 36, 64 * 64)] {
        let x = data(cin * hw, 1);
        let w = conv1x1::pack(&data(cout * cin, 2), cout, cin);
        let b = data(cout, 3);
        v.push(case(
            format!("conv1x1 nhwc {cin}→{cout} @{hw}"),
            cout * hw,
            move |y| {
                conv1x1::conv1x1_batch_nhwc(isa, par, &x, &w, &b, y, 1, cin, cout, hw, Act::Sigmoid)
            },
        ));
    }

    // Depthwise: D0's shapes (TF 'same' pads), and a 7×7 (the plain-loop path).
    for (c, n, k, s) in [
        (32, 256, 3, 1),
        (96, 256, 3, 2),
        (144, 128, 3, 1),
        (144, 128, 5, 2),
        (240, 64, 5, 2),
        (240, 64, 3, 2),
        (480, 32, 3, 1),
        (672, 32, 5, 1),
        (672, 32, 5, 2),
        (1152, 16, 5, 1),
        (64, 64, 3, 1),
        (8, 20, 7, 1),
    ] {
        let pads = same(n, k, s);
        let on = out_len(n, pads, k, s);
        let (x, w, b) = (data(c * n * n, 5), data(c * k * k, 6), data(c, 7));
        v.push(case(
            format!("depthwise {c}ch {k}x{k} s{s} @{n}²"),
            c * on * on,
            move |y| depthwise(isa, par, &x, &w, &b, y, c, n, n, k, s, pads, Act::Swish),
        ));
    }

    // Cross-op kernels: a BiFPN node's sum → depthwise (a tile of channels at a time), and
    // sum → depthwise → 1×1 and a head's separable conv, band by band (D0's P3: 4 bands).
    {
        use effdet_compiler::kernels::depthwise::{pads, route};
        use effdet_compiler::kernels::fuse_depthwise::fuse_depthwise_fixed;
        use effdet_compiler::kernels::separable::{
            depthwise_pointwise_fixed, sum_depthwise_pointwise_fixed,
        };
        use effdet_runtime::kernels::act::code;
        let (c, n) = (64, 64);
        let (a, small) = (data(c * n * n, 60), data(c * 32 * 32, 61));
        let (wd, bd, coef) = (data(c * 9, 62), data(c, 63), data(2, 64));
        let wp = conv1x1::pack(&data(c * c, 65), c, c);
        let bp = data(c, 66);
        let inputs = [
            (a.clone(), Sample::Identity),
            (small, Sample::Nearest { h: 32, w: 32 }),
        ];
        v.push(case("fuse_depthwise 64ch @64²", c * n * n, {
            let (inputs, wd, bd, coef) = (inputs.clone(), wd.clone(), bd.clone(), coef.clone());
            move |y| {
                let ins = [
                    (&inputs[0].0[..], inputs[0].1),
                    (&inputs[1].0[..], inputs[1].1),
                ];
                ::effdet_runtime::with_isa!(isa, I => fuse_depthwise_fixed::<
                        3, 1, { code::NONE }, { code::SWISH }, { route::AUTO },
                        64, 64, 64, { pads([1; 4]) }, I,
                    >(
                    par,
                    &ins,
                    &coef,
                    Act::Swish,
                    &wd,
                    &bd,
                    y,
                    c,
                    n,
                    n,
                    3,
                    1,
                    [1; 4],
                    Act::None,
                ))
            }
        }));
        v.push(case("sum → depthwise → 1×1 64ch @64²", c * n * n, {
            let (inputs, wd, bd, coef) = (inputs.clone(), wd.clone(), bd.clone(), coef.clone());
            let (wp, bp) = (wp.clone(), bp.clone());
            move |y| {
                let ins = [
                    (&inputs[0].0[..], inputs[0].1),
                    (&inputs[1].0[..], inputs[1].1),
                ];
                ::effdet_runtime::with_isa!(isa, I => sum_depthwise_pointwise_fixed::<
                    3,
                    1,
                    { code::NONE },
                    { code::SWISH },
                    { code::NONE },
                    { route::AUTO },
                    64,
                    64,
                    64,
                    64,
                    { pads([1; 4]) },
                    I,
                >(
                    par,
                    &ins,
                    &coef,
                    Act::Swish,
                    &wd,
                    &bd,
                    Act::None,
                    &wp,
                    &bp,
                    Act::None,
                    None,
                    y,
                    c,
                    c,
                    n,
                    n,
                    3,
                    1,
                    [1; 4],
                ))
            }
        }));
        v.push(case("separable 64ch @64²", c * n * n, move |y| {
            ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                    3, 1, { code::NONE }, { code::SWISH }, { route::AUTO },
                    64, 64, 64, 64, { pads([1; 4]) }, I,
                >(
                par,
                &a,
                &wd,
                &bd,
                Act::None,
                &wp,
                &bp,
                Act::Swish,
                None,
                y,
                c,
                c,
                n,
                n,
                3,
                1,
                [1; 4],
            ))
        }));
    }

    // Dense convs: the stem (3→32, 3×3 s2 @512²), a stride-1 one, and a column stride of 3
    // (the plain-loop fallback).
    for (cin, cout, n, k, s) in [(3, 32, 512, 3, 2), (8, 12, 33, 3, 1), (4, 6, 20, 3, 3)] {
        let pads = same(n, k, s);
        let on = out_len(n, pads, k, s);
        let (x, w, b) = (
            data(cin * n * n, 8),
            data(cout * cin * k * k, 9),
            data(cout, 10),
        );
        v.push(case(
            format!("conv_dense {cin}→{cout} {k}x{k} s{s} @{n}²"),
            cout * on * on,
            move |y| {
                let (kk, ss) = ([k, k], [s, s]);
                conv_dense(
                    isa,
                    par,
                    &x,
                    &w,
                    &b,
                    y,
                    cin,
                    cout,
                    n,
                    n,
                    kk,
                    ss,
                    pads,
                    Act::Swish,
                )
            },
        ));
    }

    // Grouped, dilated, with residual.
    {
        let (cin, cout, groups, n) = (8, 12, 4, 24);
        let (k, d, pads) = ([3, 3], [2, 2], [2, 2, 2, 2]);
        let x = data(cin * n * n, 11);
        let w = data(cout * (cin / groups) * 9, 12);
        let (b, r) = (data(cout, 13), data(cout * n * n, 14));
        v.push(case(
            "conv_generic grouped dilated",
            cout * n * n,
            move |y| {
                conv_generic(
                    par,
                    &x,
                    &w,
                    Some(&b),
                    Some(&r),
                    y,
                    cin,
                    cout,
                    groups,
                    n,
                    n,
                    k,
                    [1, 1],
                    d,
                    pads,
                    Act::Relu,
                )
            },
        ));
    }

    // A squeeze-excite's gates alone, and a 1×1 conv that folds them into its weights.
    {
        let (c, hw, r, cout) = (96, 64 * 64, 4, 24);
        let x = data(c * hw, 20);
        let (rw, rb, ew, eb) = (data(r * c, 21), data(r, 22), data(c * r, 23), data(c, 24));
        let mut scratch = vec![0.0; r];
        let gx = x.clone();
        v.push(case("squeeze_excite gates 96ch @64²", c, move |y| {
            ::effdet_runtime::with_isa!(isa, I => se::squeeze_excite_gates::<I>(
                par,
                &gx,
                c,
                hw,
                &rw,
                &rb,
                &ew,
                &eb,
                Act::Swish,
                &mut scratch,
                y,
            ))
        }));
        let gates = data(c, 25);
        let w = conv1x1::pack(&data(cout * c, 26), cout, c);
        let b = data(cout, 27);
        v.push(case("conv1x1 gated 96→24 @64²", cout * hw, move |y| {
            conv1x1::conv1x1_batch_gated(
                isa,
                par,
                &x,
                &gates,
                &w,
                &b,
                None,
                y,
                1,
                c,
                cout,
                hw,
                Act::None,
            )
        }));
    }

    // Squeeze-excite (in place on a copy of x).
    {
        let (c, hw, r) = (96, 128 * 128, 4);
        let x = data(c * hw, 15);
        let (rw, rb, ew, eb) = (data(r * c, 16), data(r, 17), data(c * r, 18), data(c, 19));
        let mut scratch = vec![0.0; c + r];
        v.push(case("squeeze_excite 96ch @128²", c * hw, move |y| {
            y.copy_from_slice(&x);
            ::effdet_runtime::with_isa!(isa, I => squeeze_excite::<I>(
                par,
                y,
                c,
                hw,
                &rw,
                &rb,
                &ew,
                &eb,
                Act::Swish,
                &mut scratch,
            ))
        }));
    }

    // BiFPN fusions at 64 channels: top-down (nearest 2×), bottom-up (3×3 s2 max pool),
    // nearest to a size that is not 2× (index table), a stride-1 max pool, many inputs.
    {
        let c = 64;
        let (a, b) = (data(c * 64 * 64, 20), data(c * 64 * 64, 21));
        let big = data(c * 128 * 128, 22);
        let small = data(c * 32 * 32, 23);
        let odd = data(c * 40 * 40, 24);
        let pool = Sample::MaxPool {
            h: 128,
            w: 128,
            kernel: [3, 3],
            stride: [2, 2],
            pads: [0, 0, 1, 1],
        };
        let pool1 = Sample::MaxPool {
            h: 64,
            w: 64,
            kernel: [3, 3],
            stride: [1, 1],
            pads: [1, 1, 1, 1],
        };
        let many: Vec<Vec<f32>> = (0..10).map(|i| data(c * 16 * 16, 30 + i)).collect();
        let coef = data(10, 25);
        v.push(case("fuse id + nearest 32²→64²", c * 64 * 64, {
            let (a, small, coef) = (a.clone(), small.clone(), coef.clone());
            move |y| {
                let inputs = [
                    (&a[..], Sample::Identity),
                    (&small[..], Sample::Nearest { h: 32, w: 32 }),
                ];
                fuse(isa, par, &inputs, &coef, y, c, 64, 64, Act::Swish)
            }
        }));
        v.push(case("fuse id + id + maxpool 128²→64²", c * 64 * 64, {
            let (a, b, coef) = (a.clone(), b.clone(), coef.clone());
            move |y| {
                let inputs = [
                    (&a[..], Sample::Identity),
                    (&b[..], Sample::Identity),
                    (&big[..], pool),
                ];
                fuse(isa, par, &inputs, &coef, y, c, 64, 64, Act::Swish)
            }
        }));
        v.push(case("fuse nearest 40²→64² + maxpool s1", c * 64 * 64, {
            let coef = coef.clone();
            move |y| {
                let inputs = [
                    (&odd[..], Sample::Nearest { h: 40, w: 40 }),
                    (&a[..], pool1),
                    (&b[..], Sample::Identity),
                ];
                fuse(isa, par, &inputs, &coef, y, c, 64, 64, Act::None)
            }
        }));
        v.push(case("fuse 10 inputs", c * 16 * 16, move |y| {
            let inputs: [(&[f32], Sample); 10] =
                std::array::from_fn(|i| (&many[i][..], Sample::Identity));
            fuse(isa, par, &inputs, &coef, y, c, 16, 16, Act::Swish)
        }));
    }

    // The generic ops.
    let (c, n) = (64, 32);
    let x = data(c * n * n, 40);
    {
        let x = x.clone();
        let (gm, bt, mn) = (data(c, 41), data(c, 42), data(c, 43));
        let var: Vec<f32> = data(c, 44).iter().map(|v| v.abs() + 0.5).collect();
        v.push(case("batch_norm", c * n * n, move |y| {
            g::batch_norm(par, &x, y, c, n * n, &gm, &bt, &mn, &var, 1e-3)
        }));
    }
    {
        let x = x.clone();
        v.push(case("activation", c * n * n, move |y| {
            ::effdet_runtime::with_isa!(isa, I => g::activation::<I>(par, &x, y, Act::Swish))
        }));
    }
    for (a_shape, b_shape, y_shape) in [
        (vec![1, c, n, n], vec![1, c, n, n], vec![1, c, n, n]),
        (vec![1, c, n, n], vec![1, c, 1, 1], vec![1, c, n, n]),
        (vec![2, 1, 4, 5], vec![3, 1, 5], vec![2, 3, 4, 5]),
    ] {
        let a = data(a_shape.iter().product(), 45);
        let b = data(b_shape.iter().product(), 46);
        let len = y_shape.iter().product();
        v.push(case(
            format!("binary {a_shape:?} {b_shape:?}"),
            len,
            move |y| g::binary(par, BinOp::Mul, &a, &a_shape, &b, &b_shape, y, &y_shape),
        ));
    }
    {
        let x = x.clone();
        v.push(case("global_avg_pool", c, move |y| {
            g::global_avg_pool(par, &x, y, c, n * n)
        }));
    }
    for kind in [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: false,
        },
    ] {
        let x = x.clone();
        let pads = same(n, 3, 2);
        let on = out_len(n, pads, 3, 2);
        v.push(case(format!("pool2d {kind:?}"), c * on * on, move |y| {
            g::pool2d(par, kind, &x, y, c, n, n, [3, 3], [2, 2], pads)
        }));
    }
    {
        let x = x.clone();
        v.push(case("resize_nearest 32²→50²", c * 50 * 50, move |y| {
            g::resize_nearest(par, &x, y, c, n, n, 50, 50)
        }));
    }
    {
        let x = x.clone();
        v.push(case("pad", c * 35 * 35, move |y| {
            g::pad(par, &x, y, c, n, n, [1, 1, 2, 2], 0.0)
        }));
    }
    for method in [
        FusionMethod::FastAttention { eps: 1e-4 },
        FusionMethod::Softmax,
        FusionMethod::Sum,
    ] {
        let (a, b, d) = (
            data(c * n * n, 47),
            data(c * n * n, 48),
            data(c * n * n, 49),
        );
        let raw = [0.5, -0.25, 1.5];
        v.push(case(
            format!("weighted_sum {method:?}"),
            c * n * n,
            move |y| g::weighted_sum(par, method, &raw, &[&a, &b, &d], y),
        ));
    }
    {
        let x = x.clone();
        v.push(case("transpose", c * n * n, move |y| {
            g::transpose(&x, &[1, c, n, n], &[0, 2, 3, 1], y)
        }));
    }
    {
        let (a, b) = (data(16 * n * n, 50), data(48 * n * n, 51));
        v.push(case("concat", c * n * n, move |y| {
            let (sa, sb) = ([1, 16, n, n], [1, 48, n, n]);
            g::concat(&[(&a, &sa), (&b, &sb)], 1, y)
        }));
    }
    {
        let x = x.clone();
        v.push(case("reduce mean over H, W", c, move |y| {
            g::reduce(ReduceKind::Mean, &x, &[1, c, n, n], &[2, 3], y)
        }));
    }
    v.push(case("softmax", c * n * n, move |y| {
        g::softmax(&x, &[1, c, n * n], 1, y)
    }));
    v
}

#[test]
fn kernels_allocate_nothing_after_warm_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _uncount = UncountOnDrop;
    let mut failures = Vec::new();
    for (isa, threads) in Isa::available()
        .into_iter()
        .flat_map(|isa| [(isa, 1), (isa, 2)])
    {
        let pool = counted_pool(threads);
        let mut cases = cases(isa, pool.par());
        // Warm-up: every kernel once, as the first forward pass does.
        for c in cases.iter_mut() {
            (c.run)(&mut c.out);
        }
        let mut again = vec![0.0f32; cases.iter().map(|c| c.out.len()).max().unwrap()];
        for c in cases.iter_mut() {
            let y = &mut again[..c.out.len()];
            y.fill(f32::NAN);
            let n = allocations(|| (c.run)(y));
            if n != 0 {
                failures.push(format!(
                    "{isa:?} {threads} threads {}: {n} allocations",
                    c.name
                ));
            }
            let same = y
                .iter()
                .zip(&c.out)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            if !same {
                failures.push(format!(
                    "{isa:?} {threads} threads {}: output differs on the second call",
                    c.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The counter itself works (the test above cannot pass vacuously).
#[test]
fn the_counter_sees_allocations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _uncount = UncountOnDrop;
    COUNTED.with(|c| c.set(true));
    let n = allocations(|| {
        std::hint::black_box(vec![0u8; 100]);
    });
    assert_eq!(n, 1);
    // On a worker too. The fewest of three tries, kept from before `UncountOnDrop`: the
    // stray counts seen then (2 here, on a loaded machine and under qemu) came from the
    // harness allocating on the other test's still-counted thread after it returned.
    let pool = counted_pool(2);
    let n = (0..3)
        .map(|_| {
            allocations(|| {
                pool.run(2, &|t| {
                    if t == 1 {
                        std::hint::black_box(vec![0u8; 100]);
                    }
                })
            })
        })
        .min();
    assert_eq!(n, Some(1));
}
