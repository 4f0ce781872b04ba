//! The instruction-set codes kernels and generated block functions are compiled for.

use effdet_runtime::kernels::Isa;
use effdet_runtime::with_isa;

#[test]
fn isa_codes_round_trip_and_with_isa_picks_the_matching_copy() {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar] {
        assert_eq!(Isa::of(isa.code()), isa);
        let picked = with_isa!(isa, I => Isa::of(I));
        // A target without the instruction set runs the portable copy.
        let native = match isa {
            Isa::Avx512 | Isa::Avx2 => cfg!(target_arch = "x86_64"),
            Isa::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
            Isa::Scalar => true,
        };
        assert_eq!(picked, if native { isa } else { Isa::Scalar });
    }
    assert_eq!(Isa::of(200), Isa::Scalar);
}

/// A kernel compiled for one instruction set checks the CPU before running any of it:
/// `require` returns the set where this CPU runs it and panics, naming the kernel, where it
/// does not (what the kernels' `unsafe` calls of `#[target_feature]` code rely on).
#[test]
fn require_refuses_an_instruction_set_this_cpu_lacks() {
    use effdet_runtime::kernels::act::isa_ok;
    use effdet_runtime::kernels::isa_code::{AVX2, AVX512, NEON, SCALAR};
    use effdet_runtime::kernels::simd::require;
    let runs = |f: fn(&str) -> Isa| std::panic::catch_unwind(|| f("test_kernel"));
    for (code, got) in [
        (AVX512, runs(require::<AVX512>)),
        (AVX2, runs(require::<AVX2>)),
        (NEON, runs(require::<NEON>)),
        (SCALAR, runs(require::<SCALAR>)),
    ] {
        let isa = Isa::of(code);
        match got {
            Ok(picked) => assert!(isa_ok(isa) && picked == isa, "{isa:?}"),
            Err(e) => {
                assert!(!isa_ok(isa), "{isa:?} runs here but was refused");
                let msg = e.downcast_ref::<String>().expect("a formatted message");
                assert!(msg.contains("test_kernel") && msg.contains(&format!("{isa:?}")));
            }
        }
    }
}
