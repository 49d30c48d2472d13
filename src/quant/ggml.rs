//! ggml's block quantizers Q8_0 and Q4_0, bit for bit: the same arithmetic, in the same f32
//! order, as `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` in ggml-quants.c (and the `gguf`
//! package's `quants.py`, which matches them), so that weights trained against this quantizer
//! (QAT) and exported to GGUF are exactly what llama.cpp runs.
//!
//! A block is 32 consecutive values of a row. Q8_0: `d = max|x| / 127`, `q = roundf(x / d)`
//! (half away from zero), value `q d`. Q4_0: `d = m / -8` with `m` the first element of largest
//! magnitude, `q = min(15, trunc(x / d + 8.5))`, value `(q - 8) d`. Both quantize with the f32
//! `1 / d` and store `d` as f16 (round to nearest even): the stored scale is what dequantizes.
//! Inputs must be finite (NaN has no defined block in ggml); callers check first.

use half::f16;

/// Values per block.
pub const QK: usize = 32;

/// One Q8_0 block: `d` (f16) and 32 signed 8-bit values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// One Q4_0 block: `d` (f16) and 32 unsigned 4-bit values, element `j` in the low nibble of
/// byte `j` and element `j + 16` in its high nibble (ggml's order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// The reciprocal ggml quantizes with: `1 / d`, or 0 for an all-zero block.
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

pub fn quantize_q8_0(x: &[f32; QK]) -> BlockQ8_0 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    BlockQ8_0 { d: f16::from_f32(d), qs: x.map(|v| (v * id).round() as i8) }
}

pub fn dequantize_q8_0(b: &BlockQ8_0) -> [f32; QK] {
    let d = b.d.to_f32();
    b.qs.map(|q| q as f32 * d)
}

pub fn quantize_q4_0(x: &[f32; QK]) -> BlockQ4_0 {
    // The first element of largest magnitude, with its sign (a strict `<`, as ggml).
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    // `as i8` truncates toward zero as C's `(int8_t)` does; the argument is in [0.5, 16.5].
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    let mut qs = [0u8; QK / 2];
    for (j, b) in qs.iter_mut().enumerate() {
        *b = q(x[j]) | (q(x[j + QK / 2]) << 4);
    }
    BlockQ4_0 { d: f16::from_f32(d), qs }
}

pub fn dequantize_q4_0(b: &BlockQ4_0) -> [f32; QK] {
    let d = b.d.to_f32();
    let mut y = [0f32; QK];
    for (j, &q) in b.qs.iter().enumerate() {
        y[j] = nibble(q & 0x0F, d);
        y[j + QK / 2] = nibble(q >> 4, d);
    }
    y
}

/// A 4-bit code's value at scale `d`: codes 0..16 stand for -8..8 (Q4_0's and our int4
/// groups' one rule).
#[inline(always)]
pub fn nibble(code: u8, d: f32) -> f32 {
    (code as i32 - 8) as f32 * d
}

impl BlockQ8_0 {
    /// ggml's 34-byte layout: `d` (f16, little-endian), then the 32 values.
    pub fn to_bytes(&self) -> [u8; 2 + QK] {
        let mut out = [0u8; 2 + QK];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[2..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        out
    }
}

impl BlockQ4_0 {
    /// ggml's 18-byte layout: `d` (f16, little-endian), then the 16 bytes of nibbles.
    pub fn to_bytes(&self) -> [u8; 2 + QK / 2] {
        let mut out = [0u8; 2 + QK / 2];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..].copy_from_slice(&self.qs);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/ggml/blocks.bin`, made by `scripts/make_ggml_fixture.py` with the `gguf`
    /// package's reference quantizers (layout in the script).
    struct Fixture {
        x: Vec<[f32; QK]>,
        q8: Vec<Vec<u8>>,
        q4: Vec<Vec<u8>>,
        d8: Vec<[f32; QK]>,
        d4: Vec<[f32; QK]>,
    }

    fn fixture() -> Fixture {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml/blocks.bin");
        let bytes = std::fs::read(path).expect("the ggml fixture");
        let n = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 4 + n * (4 * QK * 3 + 34 + 18), "fixture size");
        let mut at = 4;
        let mut take = |len: usize| {
            let s = &bytes[at..at + len];
            at += len;
            s.to_vec()
        };
        let floats = |b: Vec<u8>| -> Vec<[f32; QK]> {
            b.chunks(4 * QK)
                .map(|c| std::array::from_fn(|i| f32::from_le_bytes(c[4 * i..4 * i + 4].try_into().unwrap())))
                .collect()
        };
        let x = floats(take(n * 4 * QK));
        let q8 = take(n * 34).chunks(34).map(<[u8]>::to_vec).collect();
        let q4 = take(n * 18).chunks(18).map(<[u8]>::to_vec).collect();
        let d8 = floats(take(n * 4 * QK));
        let d4 = floats(take(n * 4 * QK));
        Fixture { x, q8, q4, d8, d4 }
    }

    /// Every block (zeros, |max| ties both ways, outliers, halfway cases, scales that are f16
    /// subnormal or below it, weight-like noise) quantizes to the reference's bytes and
    /// dequantizes to its values, bit for bit.
    #[test]
    fn blocks_are_byte_identical_to_ggml() {
        let f = fixture();
        assert!(f.x.len() >= 30);
        for (i, x) in f.x.iter().enumerate() {
            let (b8, b4) = (quantize_q8_0(x), quantize_q4_0(x));
            assert_eq!(b8.to_bytes().to_vec(), f.q8[i], "Q8_0 block {i}: {x:?}");
            assert_eq!(b4.to_bytes().to_vec(), f.q4[i], "Q4_0 block {i}: {x:?}");
            let bits = |a: [f32; QK]| a.map(f32::to_bits);
            assert_eq!(bits(dequantize_q8_0(&b8)), bits(f.d8[i]), "Q8_0 values of block {i}");
            assert_eq!(bits(dequantize_q4_0(&b4)), bits(f.d4[i]), "Q4_0 values of block {i}");
        }
    }
}
