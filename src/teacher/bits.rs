//! A little-endian bit stream, and Rice codes for the sorted token ids of a top-k cache.
//!
//! Sorted ids out of a vocabulary V have gaps of about V / k; a Rice code with parameter
//! r ~ log2(V / k) spends about r + 1.5 bits per id instead of 16 or 32.

#[derive(Default)]
pub struct BitWriter {
    pub bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Append the low `bits` bits of `v` (bits <= 32).
    pub fn put(&mut self, v: u32, bits: u32) {
        debug_assert!(bits <= 32 && (bits == 32 || v >> bits == 0));
        self.acc |= (v as u64) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// `q` ones then a zero: the unary quotient of a Rice code.
    pub fn unary(&mut self, mut q: u32) {
        while q >= 16 {
            self.put(0xffff, 16);
            q -= 16;
        }
        self.put((1u32 << q) - 1, q + 1);
    }

    /// Flush to a byte boundary.
    pub fn align(&mut self) {
        if self.n > 0 {
            self.bytes.push(self.acc as u8);
            self.acc = 0;
            self.n = 0;
        }
    }
}

pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0, acc: 0, n: 0 }
    }

    /// The next `bits` bits (<= 32), or `None` past the end (a truncated or corrupt record).
    pub fn get(&mut self, bits: u32) -> Option<u32> {
        while self.n < bits {
            let b = *self.bytes.get(self.pos)?;
            self.acc |= (b as u64) << self.n;
            self.pos += 1;
            self.n += 8;
        }
        let v = if bits == 32 { self.acc as u32 } else { (self.acc & ((1u64 << bits) - 1)) as u32 };
        self.acc >>= bits;
        self.n -= bits;
        Some(v)
    }

    pub fn unary(&mut self) -> Option<u32> {
        let mut q = 0;
        while self.get(1)? == 1 {
            q += 1;
            if q > 1 << 24 {
                return None;
            }
        }
        Some(q)
    }
}

/// The Rice parameter that codes `gaps` in the fewest bits.
pub fn best_rice(gaps: &[u32]) -> u32 {
    (0..24u32).min_by_key(|&r| gaps.iter().map(|&g| (g >> r) as u64 + 1 + r as u64).sum::<u64>()).unwrap_or(0)
}

pub fn put_rice(w: &mut BitWriter, g: u32, r: u32) {
    w.unary(g >> r);
    if r > 0 {
        w.put(g & ((1 << r) - 1), r);
    }
}

/// The next Rice-coded value, or `None` for a code that does not fit in 32 bits: `q << r`
/// would drop the quotient's high bits and yield a small, plausible (wrong) value. The writer
/// never uses r >= 24, so only a corrupt or crafted record gets here.
pub fn get_rice(rd: &mut BitReader, r: u32) -> Option<u32> {
    if r >= 32 {
        return None;
    }
    let q = rd.unary()?;
    if r > 0 && q >> (32 - r) != 0 {
        return None;
    }
    let low = if r > 0 { rd.get(r)? } else { 0 };
    Some((q << r) | low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn bits_and_rice_codes_round_trip() {
        let mut rng = SplitMix(9);
        let mut w = BitWriter::default();
        let mut want = Vec::new();
        for i in 0..2000 {
            let bits = (i % 33) as u32;
            let v = if bits == 0 { 0 } else { (rng.next_u64() as u32) >> (32 - bits) };
            w.put(v, bits);
            let g = (rng.next_u64() % 5000) as u32;
            let r = (i % 13) as u32;
            put_rice(&mut w, g, r);
            want.push((v, bits, g, r));
        }
        w.align();
        let mut rd = BitReader::new(&w.bytes);
        for (v, bits, g, r) in want {
            assert_eq!(rd.get(bits), Some(v));
            assert_eq!(get_rice(&mut rd, r), Some(g));
        }
        // Reading past the end is an error, not a panic.
        while rd.get(8).is_some() {}
        assert_eq!(rd.get(8), None);
    }

    /// A crafted Rice parameter (the 5-bit field allows up to 31) with a quotient whose bits
    /// would be shifted out of 32: the code cannot be valid, so it must not decode (today's
    /// `q << r` silently wrapped to a small, plausible id).
    #[test]
    fn rice_codes_that_overflow_32_bits_do_not_decode() {
        for (q, r) in [(2u32, 31u32), (1, 32), (1 << 9, 23), (4, 30)] {
            let mut w = BitWriter::default();
            w.unary(q);
            if r < 32 {
                w.put(5, r);
            }
            w.put(0, 32);
            w.align();
            let mut rd = BitReader::new(&w.bytes);
            assert_eq!(get_rice(&mut rd, r), None, "q = {q}, r = {r}");
        }
        // The largest value that fits still decodes.
        let mut w = BitWriter::default();
        put_rice(&mut w, u32::MAX, 23);
        w.align();
        assert_eq!(get_rice(&mut BitReader::new(&w.bytes), 23), Some(u32::MAX));
    }

    #[test]
    fn best_rice_is_near_log2_of_the_mean_gap() {
        let gaps: Vec<u32> = (0..128).map(|i| 200 + (i * 37) % 100).collect();
        let r = best_rice(&gaps);
        assert!((6..=8).contains(&r), "r = {r}");
    }
}
