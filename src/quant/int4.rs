//! Grouped symmetric int4 (`int4-g<N>`, as torchao's int4 weight-only QAT): each run of `N`
//! values along a row has one f32 scale `d = max|x| / 7` and values `q = round(x / d)` in
//! -7..=7 (half away from zero), stored as the nibble `q + 8`; the value is `q * d`. An
//! all-zero group has `d = 0` and zeros. Unlike ggml's Q4_0 (f16 scale from the signed extreme
//! over -8) the scale is kept in f32, so what trains is exactly what the int4 file holds.
//!
//! The packed layout is shared with Q4_0 (whose blocks are the case `N = 32`): in a group's
//! `N / 2` bytes, value `j` is the low nibble of byte `j` and value `j + N / 2` the high one.

/// The largest magnitude of `q`.
const QMAX: f32 = 7.0;

/// One group: its scale and its nibbles (`q + 8`, in 1..=15), two per byte.
pub fn quantize_group(x: &[f32]) -> (f32, Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / QMAX;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let nib = |v: f32| ((v * id).round().clamp(-QMAX, QMAX) as i8 + 8) as u8;
    let half = x.len() / 2;
    (d, (0..half).map(|j| nib(x[j]) | (nib(x[j + half]) << 4)).collect())
}

/// The values of one group from its scale and nibbles (also Q4_0's, with its f16 scale).
pub fn dequantize_group(d: f32, packed: &[u8]) -> Vec<f32> {
    let value = |n: u8| super::ggml::nibble(n, d);
    let lo = packed.iter().map(|b| value(b & 0x0F));
    let hi = packed.iter().map(|b| value(b >> 4));
    lo.chain(hi).collect()
}

/// `values` (whole groups of `group`) quantized and dequantized.
pub fn round_trip(values: &[f32], group: usize) -> Vec<f32> {
    values
        .chunks_exact(group)
        .flat_map(|g| {
            let (d, q) = quantize_group(g);
            dequantize_group(d, &q)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values: scale from the largest magnitude, half away from zero, the layout.
    #[test]
    fn known_groups() {
        let x = [7.0, -3.5, 0.49, -7.0, 1.5, 0.0, -0.5, 2.5];
        let (d, q) = quantize_group(&x);
        assert_eq!(d, 1.0);
        // q = 7, -4 (half away), 0, -7 | 2 (1.5 away), 0, -1 (-0.5 away), 3 (2.5 away)
        assert_eq!(q, vec![15 | (10 << 4), 4 | (8 << 4), 8 | (7 << 4), 1 | (11 << 4)]);
        assert_eq!(dequantize_group(d, &q), vec![7.0, -4.0, 0.0, -7.0, 2.0, 0.0, -1.0, 3.0]);
        let (d, q) = quantize_group(&[0.0; 4]);
        assert_eq!((d, dequantize_group(d, &q)), (0.0, vec![0.0; 4]));
        // The error is at most half a step.
        let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.3).collect();
        for (g, r) in x.chunks(16).zip(round_trip(&x, 16).chunks(16)) {
            let d = g.iter().fold(0f32, |a, v| a.max(v.abs())) / 7.0;
            assert!(g.iter().zip(r).all(|(a, b)| (a - b).abs() <= d / 2.0 + 1e-6));
        }
    }
}
