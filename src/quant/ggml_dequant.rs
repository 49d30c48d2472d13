//! Every ggml tensor type a GGUF file of llama.cpp holds today, back to f32, bit for bit as the
//! `gguf` Python package's numpy dequantizers (`quants.py`, which follow ggml-quants.c). numpy
//! rounds every f32 operation, so each value here is the same f32 operations in the same order:
//! e.g. the K-quants' `(d * sc) * q - (dmin * m)`, never `d * (sc * q)` or a fused multiply-add.
//! f16 scales widen to f32 exactly.
//!
//! Block layouts (bytes in order; `d`, `m`, `dmin` are little-endian f16):
//! - Q4_0 `d qs[16]`, Q4_1 `d m qs[16]`: value `j` is the low nibble of `qs[j]`, value `j + 16`
//!   its high nibble. Q5_0 `d qh[4] qs[16]`, Q5_1 `d m qh[4] qs[16]`: the same nibbles, with
//!   bit `j` of the little-endian u32 `qh` as value `j`'s fifth bit. Q8_0 `d qs[32]` (i8).
//! - K-quants: 256 values in 16 groups of 16 (Q2_K, Q3_K, Q6_K) or 8 of 32 (Q4_K, Q5_K), each
//!   with its own scale. Their layouts are by each function below.

use half::f16;

use super::ggml::{BlockQ4_0, BlockQ8_0, dequantize_q4_0, dequantize_q8_0};
use crate::export::gguf::GgmlType;

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// `data` (whole blocks of `ty`; the count comes from its length) as f32 values.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (per, size) = ty.block();
    debug_assert!(data.len().is_multiple_of(size), "{ty:?}: {} bytes are not whole {size}-byte blocks", data.len());
    let out = match ty {
        GgmlType::F32 => crate::util::f32s_from_le(data),
        GgmlType::F16 => data.chunks_exact(2).map(|b| f(b, 0)).collect(),
        // BF16 is the high half of an f32: exact, NaN payloads included.
        GgmlType::BF16 => {
            data.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
        }
        GgmlType::Q8_0 => blocks(data, |b: &[u8; 34], y: &mut [f32; 32]| {
            *y = dequantize_q8_0(&BlockQ8_0 { d: half(b, 0), qs: std::array::from_fn(|i| b[2 + i] as i8) })
        }),
        GgmlType::Q4_0 => blocks(data, |b: &[u8; 18], y: &mut [f32; 32]| {
            *y = dequantize_q4_0(&BlockQ4_0 { d: half(b, 0), qs: b[2..].try_into().expect("16 bytes") })
        }),
        GgmlType::Q4_1 => blocks(data, q4_1),
        GgmlType::Q5_0 => blocks(data, q5_0),
        GgmlType::Q5_1 => blocks(data, q5_1),
        GgmlType::Q2_K => blocks(data, q2_k),
        GgmlType::Q3_K => blocks(data, q3_k),
        GgmlType::Q4_K => blocks(data, q4_k),
        GgmlType::Q5_K => blocks(data, q5_k),
        GgmlType::Q6_K => blocks(data, q6_k),
    };
    debug_assert_eq!(out.len(), data.len() / size * per);
    out
}

/// Each whole `B`-byte block of `data` into its `N` values, in one preallocated vector.
fn blocks<const N: usize, const B: usize>(data: &[u8], f: impl Fn(&[u8; B], &mut [f32; N])) -> Vec<f32> {
    let (blocks, _) = data.as_chunks::<B>();
    let mut out = vec![0f32; blocks.len() * N];
    let (ys, _) = out.as_chunks_mut::<N>();
    for (b, y) in blocks.iter().zip(ys) {
        f(b, y);
    }
    out
}

fn half(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

/// The f16 at `b[at..]` as f32, as numpy widens it: exact, and a NaN keeps its payload and
/// its signalling bit (where `half` and x86's F16C quiet it).
fn f(b: &[u8], at: usize) -> f32 {
    let x = half(b, at);
    if x.is_nan() {
        let bits = x.to_bits() as u32;
        f32::from_bits((bits & 0x8000) << 16 | 0x7F80_0000 | (bits & 0x03FF) << 13)
    } else {
        x.to_f32()
    }
}

/// Value `j` of a Q4/Q5 block: its nibble, and (Q5) bit `j` of `qh` as bit 4.
fn code(qs: &[u8], qh: u32, j: usize) -> u8 {
    let nibble = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
    nibble | (((qh >> j) & 1) as u8) << 4
}

/// `d * q + m`.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (f(b, 0), f(b, 2));
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * code(&b[4..], 0, j) as f32 + m;
    }
}

/// `d * (q - 16)`.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let (d, qh) = (f(b, 0), u32::from_le_bytes(b[2..6].try_into().expect("4 bytes")));
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * (code(&b[6..], qh, j) as i32 - 16) as f32;
    }
}

/// `d * q + m`.
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m, qh) = (f(b, 0), f(b, 2), u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")));
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * code(&b[8..], qh, j) as f32 + m;
    }
}

/// The 2-bit fields of a K-quant's `qs` (32 bytes per 128 values): value `i` is bits
/// `2 (i / 32 % 4)` of byte `i / 128 * 32 + i % 32`.
fn crumb(qs: &[u8], i: usize) -> u8 {
    (qs[i / 128 * 32 + i % 32] >> (2 * (i / 32 % 4))) & 3
}

/// The 4-bit fields of Q4_K/Q5_K's `qs`: value `i` is the low (`i / 32` even) or high nibble of
/// byte `i / 64 * 32 + i % 32`.
fn k_nibble(qs: &[u8], i: usize) -> u8 {
    (qs[i / 64 * 32 + i % 32] >> (4 * (i / 32 % 2))) & 0x0F
}

/// Q2_K `scales[16] qs[64] d dmin`: group `g` of 16 has scale `scales[g] & 15` and min
/// `scales[g] >> 4`; value `(d * sc) * q - (dmin * m)` with `q` = [`crumb`].
fn q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let (scales, qs, d, dmin) = (&b[..16], &b[16..80], f(b, 80), f(b, 82));
    for (i, y) in y.iter_mut().enumerate() {
        let s = scales[i / 16];
        let (dl, ml) = (d * (s & 0x0F) as f32, dmin * (s >> 4) as f32);
        *y = dl * crumb(qs, i) as f32 - ml;
    }
}

/// Q3_K `hmask[32] qs[64] scales[12] d`: 16 signed 6-bit scales, low nibbles from bytes 0..8
/// (group `g`: byte `g % 8`, high nibble for `g >= 8`) and high 2 bits from bytes 8..12 (byte
/// `8 + g % 4`, bits `2 (g / 4)`), minus 32. Value `(d * sc) * q` with `q` = [`crumb`] minus 4
/// where bit `i / 32` of `hmask[i % 32]` is clear.
fn q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let (hmask, qs, s, d) = (&b[..32], &b[32..96], &b[96..108], f(b, 108));
    let dl: [f32; 16] = std::array::from_fn(|g| {
        let lo = (s[g % 8] >> (4 * (g / 8))) & 0x0F;
        let hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        d * ((lo | hi << 4) as i32 - 32) as f32
    });
    for (i, y) in y.iter_mut().enumerate() {
        let high = (hmask[i % 32] >> (i / 32)) & 1;
        let q = crumb(qs, i) as i32 - if high == 1 { 0 } else { 4 };
        *y = dl[i / 16] * q as f32;
    }
}

/// Q4_K/Q5_K's 12 scale bytes: 8 6-bit scales and 8 6-bit mins (ggml's `get_scale_min_k4`).
/// Groups 0..4 are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); groups 4..8 take
/// their low nibble (scale) and high nibble (min) from bytes 8..12 and their top 2 bits from
/// the top bits of bytes 0..4 (scales) and 4..8 (mins).
fn scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let sc = std::array::from_fn(|g| if g < 4 { s[g] & 63 } else { (s[g + 4] & 0x0F) | ((s[g - 4] >> 2) & 0x30) });
    let m = std::array::from_fn(|g| if g < 4 { s[g + 4] & 63 } else { (s[g + 4] >> 4) | ((s[g] >> 2) & 0x30) });
    (sc, m)
}

/// The K-quants' `(d * sc, dmin * m)` of each group of 32, from `d dmin scales[12]`.
fn scales_k4(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f(b, 0), f(b, 2));
    let (sc, m) = scale_min(&b[4..16]);
    (sc.map(|s| d * s as f32), m.map(|m| dmin * m as f32))
}

/// Q4_K `d dmin scales[12] qs[128]`: value `(d * sc) * q - (dmin * m)`, `q` = [`k_nibble`].
fn q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let ((ds, dm), qs) = (scales_k4(b), &b[16..]);
    for (i, y) in y.iter_mut().enumerate() {
        *y = ds[i / 32] * k_nibble(qs, i) as f32 - dm[i / 32];
    }
}

/// Q5_K `d dmin scales[12] qh[32] qs[128]`: as Q4_K, with bit `i / 32` of `qh[i % 32]` as
/// bit 4 of `q`.
fn q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let ((ds, dm), qh, qs) = (scales_k4(b), &b[16..48], &b[48..]);
    for (i, y) in y.iter_mut().enumerate() {
        let q = k_nibble(qs, i) | ((qh[i % 32] >> (i / 32)) & 1) << 4;
        *y = ds[i / 32] * q as f32 - dm[i / 32];
    }
}

/// Q6_K `ql[128] qh[64] scales[16] d`: per 128 values `h`, the low 4 bits of value `i` are the
/// low (`i % 128 < 64`) or high nibble of `ql[64 h + i % 64]`, its top 2 bits are [`crumb`]
/// of `qh`; value `(d * scales[i / 16]) * (q - 32)` with the scales signed.
fn q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], f(b, 208));
    let dl: [f32; 16] = std::array::from_fn(|g| d * scales[g] as i8 as f32);
    for (i, y) in y.iter_mut().enumerate() {
        let lo = (ql[i / 128 * 64 + i % 64] >> (4 * (i % 128 / 64))) & 0x0F;
        let q = (lo | crumb(qh, i) << 4) as i32 - 32;
        *y = dl[i / 16] * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One type's section of `tests/fixtures/ggml/dequant.bin`, made by
    /// `scripts/make_ggml_dequant_fixture.py` with the `gguf` package (layout in the script).
    struct Section {
        id: u32,
        /// gguf's `(values, bytes)` per block.
        sizes: (usize, usize),
        blocks: Vec<u8>,
        /// gguf's values.
        want: Vec<f32>,
    }

    fn sections() -> Vec<Section> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml/dequant.bin");
        let bytes = std::fs::read(path).expect("the ggml dequant fixture");
        let mut at = 0;
        let mut take = |len: usize| {
            at += len;
            &bytes[at - len..at]
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        let n = u32_at(take(4));
        let out = (0..n)
            .map(|_| {
                let id = u32_at(take(4));
                let sizes = (u32_at(take(4)) as usize, u32_at(take(4)) as usize);
                let n_blocks = u32_at(take(4)) as usize;
                let blocks = take(n_blocks * sizes.1).to_vec();
                Section { id, sizes, blocks, want: crate::util::f32s_from_le(take(n_blocks * sizes.0 * 4)) }
            })
            .collect();
        assert_eq!(at, bytes.len(), "fixture size");
        out
    }

    /// Every type's adversarial blocks (quantized by gguf where it can, else crafted bytes:
    /// zero, negative, subnormal and extreme scales) dequantize to gguf's values, bit for bit,
    /// and its block sizes are gguf's `GGML_QUANT_SIZES`.
    #[test]
    fn every_type_is_bit_exact_with_gguf() {
        let sections = sections();
        assert_eq!(sections.len(), 13, "one section per type");
        for Section { id, sizes, blocks, want } in sections {
            let ty = GgmlType::from_id(id).unwrap_or_else(|| panic!("type id {id}"));
            assert_eq!(ty.block(), sizes, "{ty:?} block sizes");
            let got = dequantize(ty, &blocks);
            assert_eq!(got.len(), want.len(), "{ty:?} values");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (block, value) = (i / sizes.0, i % sizes.0);
                assert_eq!(g.to_bits(), w.to_bits(), "{ty:?} block {block} value {value}: {g} vs gguf {w}");
            }
        }
    }
}
