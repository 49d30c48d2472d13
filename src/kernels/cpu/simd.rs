//! Vector code without intrinsics: plain loops the compiler vectorizes, compiled three times
//! (AVX-512, AVX2 + FMA, the baseline) and picked at run time by [`simd_fn!`].
//!
//! Results are the same bits on every variant: Rust never contracts `a * b + c` into an FMA nor
//! reorders a float sum, so each variant runs the same operations in the same order; sums keep
//! [`LANES`] independent partial sums (that is what lets them vectorize) and add them up in a
//! fixed order at the end. `exp` is our own polynomial (below), not libm's scalar `expf`, which
//! was 10% of a CPU training step.

/// Partial sums per reduction: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// Defines `fn name(args) -> ret` whose body is compiled for AVX-512, for AVX2 + FMA and for
/// the baseline, and runs the best the CPU has (`is_x86_feature_detected!` caches its answer).
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
                    // SAFETY: the CPU has the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features v3 was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// `e^x` in f32 to within 2 ulp over the whole range (Cephes' `expf` polynomial): `x = n ln2 +
/// r`, `|r| <= ln2 / 2`, `e^x = 2^n p(r)`. Branch-free, so loops of it vectorize. Below
/// -87.3 it gives 2^-126-ish instead of a denormal or 0 (nothing a softmax sum can see), above
/// 88.7 it saturates at f32::MAX; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.722_83);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001e-1, which is 0.5 in f32
    let p = p * r * r + r + 1.0;
    // 2^n through the exponent bits, in two halves so that n = 128 (x near 88.72) stays finite.
    let n = n as i32;
    let half = n >> 1;
    let a = f32::from_bits(((half + 127) as u32) << 23);
    let b = f32::from_bits(((n - half + 127) as u32) << 23);
    p * a * b
}

/// Largest element (NEG_INFINITY for an empty slice; NaN propagates to the caller's sums).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = tail.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// Sum in a fixed order: [`LANES`] strided partial sums, then the tail, then the partials.
#[inline(always)]
pub fn sum_of(x: &[f32], f: impl Fn(usize, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let n = x.len() / LANES * LANES;
    let mut i = 0;
    while i < n {
        for l in 0..LANES {
            acc[l] += f(i + l, x[i + l]);
        }
        i += LANES;
    }
    let mut s = 0f32;
    for (j, &v) in x[n..].iter().enumerate() {
        s += f(n + j, v);
    }
    for a in acc {
        s += a;
    }
    s
}

simd_fn! {
    /// `out[i] = exp(x[i])`, for tests and callers without a fused kernel.
    pub fn exp_into(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of f64's exp over the range a softmax uses, and the edges behave.
    #[test]
    fn exp_matches_f64_to_2_ulp() {
        let xs: Vec<f32> = (0..200_001).map(|i| -87.0 + i as f32 * (175.0 / 200_000.0)).collect();
        let mut ys = vec![0f32; xs.len()];
        exp_into(&xs, &mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            let ulp = (want as f32).to_bits().abs_diff(y.to_bits());
            assert!(ulp <= 2, "exp({x}) = {y}, want {want} ({ulp} ulp)");
        }
        assert!(exp(f32::NEG_INFINITY) < 1e-37 && exp(f32::NEG_INFINITY) >= 0.0);
        assert!(exp(f32::INFINITY).is_finite() && exp(f32::INFINITY) > 3e38);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    /// The dispatched variant and the baseline give the same bits (no contraction, no reordering).
    #[test]
    fn variants_agree_bitwise() {
        let xs: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
        let mut ys = vec![0f32; xs.len()];
        exp_into(&xs, &mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            assert_eq!(exp(x).to_bits(), y.to_bits());
        }
        let s = sum_of(&xs, |_, v| v);
        let mut naive = [0f32; LANES];
        let n = xs.len() / LANES * LANES;
        for (i, &v) in xs[..n].iter().enumerate() {
            naive[i % LANES] += v;
        }
        let mut want = xs[n..].iter().fold(0f32, |a, &b| a + b);
        for a in naive {
            want += a;
        }
        assert_eq!(s.to_bits(), want.to_bits());
        assert_eq!(max(&xs), xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
}
