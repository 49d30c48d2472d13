//! The GGUF v3 container (ggml's `gguf.h`, and the `gguf` Python package's `GGUFWriter`, whose
//! byte layout this writer reproduces): a header, metadata key/values, tensor descriptions,
//! then the tensor data, each piece aligned to `general.alignment` ([`ALIGNMENT`] unless set).
//!
//! `header: "GGUF" u32 version u64 n_tensors u64 n_kv`, then each key/value as `string key,
//! u32 type, value`, each tensor as `string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type,
//! u64 offset`; strings are `u64 length` + UTF-8. `ne[0]` is the innermost (contiguous)
//! dimension: a `[rows, cols]` matrix is `ne = [cols, rows]`. Value type ids: u8 0, i8 1,
//! u16 2, i16 3, u32 4, i32 5, f32 6, bool 7 (one byte), string 8, array 9 (`u32 type, u64 n`,
//! then the elements), u64 10, i64 11, f64 12.
//!
//! The reader takes files from anywhere (llama.cpp's included): every size it reads is checked
//! against the bytes that are there before anything is allocated from it.

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
/// `general.alignment`'s default, which we never change (a file may: the reader honours it).
pub const ALIGNMENT: usize = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The ggml tensor types we read; the writer writes F32, F16, Q4_0 and Q8_0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Every ggml type id the `gguf` package knows (`GGMLQuantizationType`), to name the ones we
/// refuse.
const TYPE_NAMES: [(u32, &str); 34] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
    (40, "NVFP4"),
    (41, "Q1_0"),
];

impl GgmlType {
    const ALL: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// `(values per block, bytes per block)`, as ggml's `GGML_QUANT_SIZES`.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
        }
    }
}

/// A metadata value: every GGUF value type, and arrays of each but arrays (which ggml refuses
/// too). Arrays are typed vectors so that e.g. `tokenizer.ggml.scores` reads as `F32s`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    U8s(Vec<u8>),
    I8s(Vec<i8>),
    U16s(Vec<u16>),
    I16s(Vec<i16>),
    U32s(Vec<u32>),
    I32s(Vec<i32>),
    U64s(Vec<u64>),
    I64s(Vec<i64>),
    F32s(Vec<f32>),
    F64s(Vec<f64>),
    Bools(Vec<bool>),
    Strs(Vec<String>),
}

// GGUF value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// A fixed-size little-endian scalar of the metadata.
trait Le: Sized {
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("SIZE bytes"))
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.extend(self.to_le_bytes())
            }
        }
    )*};
}
le!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// GGUF's bool is one byte; any non-zero byte reads as true, as in ggml.
impl Le for bool {
    const SIZE: usize = 1;
    fn read(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.push(*self as u8)
    }
}

/// One tensor: its name, `ne` (innermost first) and its bytes in `ty`'s layout.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// A whole GGUF file in memory, in write order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gguf {
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<GgufTensor>,
}

fn pad(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A scalar value: its type id, then the value.
fn put<T: Le>(out: &mut Vec<u8>, ty: u32, x: &T) {
    out.extend(ty.to_le_bytes());
    x.write(out);
}

/// An array value: `T_ARRAY`, the element type id, the count, then the elements.
fn put_all<T: Le>(out: &mut Vec<u8>, ty: u32, xs: &[T]) {
    put_array_head(out, ty, xs.len());
    xs.iter().for_each(|x| x.write(out));
}

fn put_array_head(out: &mut Vec<u8>, ty: u32, n: usize) {
    out.extend(T_ARRAY.to_le_bytes());
    out.extend(ty.to_le_bytes());
    out.extend((n as u64).to_le_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => put(out, T_U8, x),
        Value::I8(x) => put(out, T_I8, x),
        Value::U16(x) => put(out, T_U16, x),
        Value::I16(x) => put(out, T_I16, x),
        Value::U32(x) => put(out, T_U32, x),
        Value::I32(x) => put(out, T_I32, x),
        Value::U64(x) => put(out, T_U64, x),
        Value::I64(x) => put(out, T_I64, x),
        Value::F32(x) => put(out, T_F32, x),
        Value::F64(x) => put(out, T_F64, x),
        Value::Bool(x) => put(out, T_BOOL, x),
        Value::Str(s) => {
            out.extend(T_STRING.to_le_bytes());
            put_str(out, s);
        }
        Value::U8s(xs) => put_all(out, T_U8, xs),
        Value::I8s(xs) => put_all(out, T_I8, xs),
        Value::U16s(xs) => put_all(out, T_U16, xs),
        Value::I16s(xs) => put_all(out, T_I16, xs),
        Value::U32s(xs) => put_all(out, T_U32, xs),
        Value::I32s(xs) => put_all(out, T_I32, xs),
        Value::U64s(xs) => put_all(out, T_U64, xs),
        Value::I64s(xs) => put_all(out, T_I64, xs),
        Value::F32s(xs) => put_all(out, T_F32, xs),
        Value::F64s(xs) => put_all(out, T_F64, xs),
        Value::Bools(xs) => put_all(out, T_BOOL, xs),
        Value::Strs(xs) => {
            put_array_head(out, T_STRING, xs.len());
            xs.iter().for_each(|s| put_str(out, s));
        }
    }
}

/// The data section's alignment: `general.alignment`, a power-of-two u32, or [`ALIGNMENT`]
/// when absent; `None` when the key holds anything else.
fn alignment(kv: &[(String, Value)]) -> Option<usize> {
    match kv.iter().find(|(k, _)| k == ALIGNMENT_KEY).map(|(_, v)| v) {
        None => Some(ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Some(*a as usize),
        Some(_) => None,
    }
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The file's bytes; tensor data aligned to `general.alignment` if set (so that a file we
    /// read writes back as it was), else to [`ALIGNMENT`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = alignment(&self.kv).expect("general.alignment, when set, is a power-of-two u32");
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            t.ne.iter().for_each(|n| out.extend(n.to_le_bytes()));
            out.extend(t.ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += pad(t.data.len(), align) as u64;
        }
        for t in &self.tensors {
            out.resize(pad(out.len(), align), 0);
            out.extend(&t.data);
        }
        out.resize(pad(out.len(), align), 0);
        out
    }

    /// Parse a GGUF file; `what` (its path) goes into every error.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Gguf> {
        Self::parse_with(bytes, what, true)
    }

    /// The metadata and every tensor's name, shape and type, each checked against the file as
    /// [`Gguf::parse`] does, but no tensor's bytes copied (`data` left empty): a model's shape
    /// from a multi-gigabyte file without reading its weights.
    pub fn parse_header(bytes: &[u8], what: &str) -> Result<Gguf> {
        Self::parse_with(bytes, what, false)
    }

    fn parse_with(bytes: &[u8], what: &str, with_data: bool) -> Result<Gguf> {
        let mut r = Reader { b: bytes, at: 0, what };
        if r.take(4)? != MAGIC {
            return Err(r.bad("does not start with \"GGUF\""));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(r.bad(&format!("GGUF version {version}, expected {VERSION}")));
        }
        let (n_tensors, n_kv) = (r.u64()?, r.u64()?);
        let mut g = Gguf::default();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, &key)?;
            g.kv.push((key, v));
        }
        let align = alignment(&g.kv).ok_or_else(|| {
            r.bad(&format!("`{ALIGNMENT_KEY}` is {:?}, expected a power-of-two u32", g.get(ALIGNMENT_KEY)))
        })?;
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 4 {
                return Err(r.bad(&format!("tensor `{name}` has {n_dims} dimensions, ggml allows at most 4")));
            }
            let ne: Vec<u64> = (0..n_dims).map(|_| r.u64()).collect::<Result<_>>()?;
            let id = r.u32()?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                let known = TYPE_NAMES.iter().find(|(i, _)| *i == id).map_or(String::new(), |(_, n)| format!(" ({n})"));
                r.bad(&format!("tensor `{name}` has ggml type {id}{known}, which we do not read"))
            })?;
            let offset = r.u64()?;
            if offset % align as u64 != 0 {
                return Err(
                    r.bad(&format!("tensor `{name}` at offset {offset}, not a multiple of the alignment {align}"))
                );
            }
            infos.push((name, ne, ty, offset));
        }
        let data_start = pad(r.at, align);
        for (name, ne, ty, offset) in infos {
            let (per, size) = ty.block();
            // ggml's rule: rows (ne[0], 1 for a scalar) are whole blocks.
            let row = ne.first().copied().unwrap_or(1);
            if row % per as u64 != 0 {
                return Err(r.bad(&format!(
                    "tensor `{name}` ({ty:?}) has rows of {row} values, not a multiple of its {per}-value blocks"
                )));
            }
            let n = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let nbytes = n.filter(|n| n / per as u64 <= bytes.len() as u64).map(|n| n / per as u64 * size as u64);
            let start = (data_start as u64).checked_add(offset);
            let range = match (nbytes, start) {
                (Some(nb), Some(s)) if s.checked_add(nb).is_some_and(|e| e <= bytes.len() as u64) => {
                    s as usize..(s + nb) as usize
                }
                _ => {
                    return Err(r.bad(&format!(
                        "tensor `{name}` ({ty:?}, ne {ne:?}) at offset {offset} does not fit in the file's {} bytes",
                        bytes.len()
                    )));
                }
            };
            let data = if with_data { bytes[range].to_vec() } else { Vec::new() };
            g.tensors.push(GgufTensor { name, ne, ty, data });
        }
        Ok(g)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl Reader<'_> {
    fn bad(&self, msg: &str) -> Error {
        Error::input(format!("{}: {msg} (at byte {})", self.what, self.at))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.b.len() - self.at < n {
            return Err(self.bad(&format!("truncated: {n} more bytes expected, {} left", self.b.len() - self.at)));
        }
        self.at += n;
        Ok(&self.b[self.at - n..self.at])
    }

    fn u32(&mut self) -> Result<u32> {
        self.num()
    }

    fn u64(&mut self) -> Result<u64> {
        self.num()
    }

    fn num<T: Le>(&mut self) -> Result<T> {
        Ok(T::read(self.take(T::SIZE)?))
    }

    /// An array's `n` elements of `T`, checked to fit before anything is sized from `n`.
    fn nums<T: Le>(&mut self, n: u64, key: &str) -> Result<Vec<T>> {
        self.fits(n, T::SIZE as u64, key)?;
        Ok(self.take(n as usize * T::SIZE)?.chunks_exact(T::SIZE).map(T::read).collect())
    }

    /// `n` items of at least `each` bytes must fit in what is left.
    fn fits(&self, n: u64, each: u64, key: &str) -> Result<()> {
        let left = (self.b.len() - self.at) as u64;
        if n.checked_mul(each).is_none_or(|need| need > left) {
            return Err(self.bad(&format!("key `{key}`: {n} elements cannot fit in the {left} bytes left")));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n > left {
            return Err(self.bad(&format!("a string of {n} bytes, but only {left} bytes are left")));
        }
        let s = self.take(n as usize)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.bad("a string that is not UTF-8"))
    }

    /// A value of type `ty` for `key`.
    fn value(&mut self, ty: u32, key: &str) -> Result<Value> {
        Ok(match ty {
            T_U8 => Value::U8(self.num()?),
            T_I8 => Value::I8(self.num()?),
            T_U16 => Value::U16(self.num()?),
            T_I16 => Value::I16(self.num()?),
            T_U32 => Value::U32(self.num()?),
            T_I32 => Value::I32(self.num()?),
            T_U64 => Value::U64(self.num()?),
            T_I64 => Value::I64(self.num()?),
            T_F32 => Value::F32(self.num()?),
            T_F64 => Value::F64(self.num()?),
            T_BOOL => Value::Bool(self.num()?),
            T_STRING => Value::Str(self.string()?),
            T_ARRAY => {
                let (ety, n) = (self.u32()?, self.u64()?);
                match ety {
                    T_U8 => Value::U8s(self.nums(n, key)?),
                    T_I8 => Value::I8s(self.nums(n, key)?),
                    T_U16 => Value::U16s(self.nums(n, key)?),
                    T_I16 => Value::I16s(self.nums(n, key)?),
                    T_U32 => Value::U32s(self.nums(n, key)?),
                    T_I32 => Value::I32s(self.nums(n, key)?),
                    T_U64 => Value::U64s(self.nums(n, key)?),
                    T_I64 => Value::I64s(self.nums(n, key)?),
                    T_F32 => Value::F32s(self.nums(n, key)?),
                    T_F64 => Value::F64s(self.nums(n, key)?),
                    T_BOOL => Value::Bools(self.nums(n, key)?),
                    T_STRING => {
                        // Each string is at least its 8-byte length.
                        self.fits(n, 8, key)?;
                        Value::Strs((0..n).map(|_| self.string()).collect::<Result<_>>()?)
                    }
                    T_ARRAY => {
                        return Err(self.bad(&format!("key `{key}`: an array of arrays, which ggml does not read")));
                    }
                    _ => {
                        return Err(
                            self.bad(&format!("key `{key}`: array of value type {ety}, which GGUF does not define"))
                        );
                    }
                }
            }
            _ => return Err(self.bad(&format!("key `{key}`: value type {ty}, which GGUF does not define"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Gguf {
        Gguf {
            kv: vec![
                ("general.architecture".into(), Value::Str("llama".into())),
                ("n".into(), Value::U32(7)),
                ("eps".into(), Value::F32(1e-5)),
                ("b".into(), Value::Bool(true)),
                ("tokens".into(), Value::Strs(vec!["a".into(), "Ġb".into()])),
                ("types".into(), Value::I32s(vec![1, 3])),
            ],
            tensors: vec![
                GgufTensor { name: "v".into(), ne: vec![3], ty: GgmlType::F32, data: vec![1; 12] },
                GgufTensor { name: "m".into(), ne: vec![32, 2], ty: GgmlType::Q8_0, data: vec![2; 68] },
            ],
        }
    }

    /// Written and parsed back; tensor data aligned to 32 bytes with the padding between.
    #[test]
    fn round_trips_and_aligns() {
        let g = sample();
        let b = g.to_bytes();
        assert_eq!(Gguf::parse(&b, "x").unwrap(), g);
        assert_eq!(b.len() % ALIGNMENT, 0);
        // 12 bytes padded to 32, then 68 padded to 96.
        let end = b.len();
        assert_eq!(&b[end - 128..end - 116], &[1; 12]);
        assert_eq!(&b[end - 116..end - 96], &[0; 20]);
        assert_eq!(&b[end - 96..end - 28], &[2; 68]);
        assert_eq!(&b[end - 28..], &[0; 28]);
    }

    /// Truncated or crafted files are errors naming the file, never a panic or a huge
    /// allocation.
    #[test]
    fn crafted_files_are_refused() {
        let b = sample().to_bytes();
        for cut in [0, 3, 10, 30, 100, b.len() - 40] {
            let e = Gguf::parse(&b[..cut], "f.gguf").unwrap_err();
            assert!(e.to_string().starts_with("f.gguf: "), "{e}");
        }
        // An array claiming 2^60 elements.
        let mut g = Gguf::default();
        g.kv.push(("tokens".into(), Value::Strs(vec!["a".into()])));
        let mut b = g.to_bytes();
        let at = 4 + 4 + 16 + 8 + "tokens".len() + 4 + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = Gguf::parse(&b, "f.gguf").unwrap_err();
        assert!(e.to_string().contains("key `tokens`") && e.to_string().contains("cannot fit"), "{e}");
        // A tensor whose shape would need exabytes.
        let mut g = sample();
        g.tensors[1].ne = vec![32, 1 << 58];
        let e = Gguf::parse(&g.to_bytes(), "f.gguf").unwrap_err();
        assert!(e.to_string().contains("tensor `m`") && e.to_string().contains("does not fit"), "{e}");
    }

    /// Where `needle` first occurs in `b`.
    fn find(b: &[u8], needle: &[u8]) -> usize {
        b.windows(needle.len()).position(|w| w == needle).expect("needle")
    }

    /// The byte offset of tensor `name`'s ggml type id in `b`.
    fn type_id_at(b: &[u8], name: &str, n_dims: usize) -> usize {
        let mut s = (name.len() as u64).to_le_bytes().to_vec();
        s.extend(name.as_bytes());
        find(b, &s) + s.len() + 4 + 8 * n_dims
    }

    /// Every value type (scalars, and arrays of each scalar type and of strings) written as
    /// GGUF lays it out and read back; K-quant and 1-D tensors with them.
    #[test]
    fn every_value_type_round_trips() {
        let mut g = sample();
        g.kv.extend([
            ("u8".into(), Value::U8(200)),
            ("i8".into(), Value::I8(-100)),
            ("u16".into(), Value::U16(60000)),
            ("i16".into(), Value::I16(-30000)),
            ("i32".into(), Value::I32(-7)),
            ("u64".into(), Value::U64(1 << 40)),
            ("i64".into(), Value::I64(-1 << 40)),
            ("f64".into(), Value::F64(-0.1)),
            ("u8s".into(), Value::U8s(vec![0, 255])),
            ("i8s".into(), Value::I8s(vec![-128, 127])),
            ("u16s".into(), Value::U16s(vec![1, 65535])),
            ("i16s".into(), Value::I16s(vec![-1])),
            ("u32s".into(), Value::U32s(vec![])),
            ("u64s".into(), Value::U64s(vec![u64::MAX])),
            ("i64s".into(), Value::I64s(vec![i64::MIN, 3])),
            ("scores".into(), Value::F32s(vec![-1.5, 0.0, 1e30])),
            ("f64s".into(), Value::F64s(vec![2.5])),
            ("bools".into(), Value::Bools(vec![true, false, true])),
        ]);
        g.tensors.push(GgufTensor { name: "k".into(), ne: vec![256, 2], ty: GgmlType::Q4_K, data: vec![3; 288] });
        g.tensors.push(GgufTensor { name: "h".into(), ne: vec![5], ty: GgmlType::BF16, data: vec![4; 10] });
        let b = g.to_bytes();
        assert_eq!(Gguf::parse(&b, "x").unwrap(), g);
        // The layout of one scalar and one array: key, type id, value / element type, count.
        let at = find(&b, b"i16s") + 4;
        assert_eq!(&b[at..at + 18], &[9, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
        let at = find(&b, b"u16") + 3;
        assert_eq!(&b[at..at + 6], &[2, 0, 0, 0, 0x60, 0xEA]);
    }

    /// `general.alignment` places the data section and every tensor; one that is not a
    /// power-of-two u32 is refused, as are offsets off it.
    #[test]
    fn honours_general_alignment() {
        let mut g = sample();
        g.kv.push((ALIGNMENT_KEY.into(), Value::U32(64)));
        let b = g.to_bytes();
        assert_eq!(Gguf::parse(&b, "x").unwrap(), g);
        // 12 bytes padded to 64, then 68 padded to 128.
        assert_eq!(b.len() % 64, 0);
        assert_eq!(&b[b.len() - 192..b.len() - 180], &[1; 12]);
        assert_eq!(&b[b.len() - 128..b.len() - 60], &[2; 68]);
        // The same file read with the default alignment would be misplaced: it is refused.
        let at = find(&b, ALIGNMENT_KEY.as_bytes()) + ALIGNMENT_KEY.len() + 4;
        for (bytes, why) in [(48u32.to_le_bytes(), "power-of-two"), (0u32.to_le_bytes(), "power-of-two")] {
            let mut bad = b.clone();
            bad[at..at + 4].copy_from_slice(&bytes);
            let e = Gguf::parse(&bad, "f.gguf").unwrap_err().to_string();
            assert!(e.contains("`general.alignment`") && e.contains(why), "{e}");
        }
        let mut bad = b.clone();
        bad[at - 4] = T_I32 as u8;
        let e = Gguf::parse(&bad, "f.gguf").unwrap_err().to_string();
        assert!(e.contains("`general.alignment` is Some(I32(64))"), "{e}");
        // The second tensor's offset moved off the alignment.
        let mut bad = b.clone();
        let off = type_id_at(&b, "m", 2) + 4;
        bad[off..off + 8].copy_from_slice(&96u64.to_le_bytes());
        let e = Gguf::parse(&bad, "f.gguf").unwrap_err().to_string();
        assert!(e.contains("tensor `m` at offset 96, not a multiple of the alignment 64"), "{e}");
    }

    /// A tensor of a type we do not read, an array of arrays and a row that is not whole
    /// blocks are refused, naming the tensor or key (and the type, where ggml names it).
    #[test]
    fn unknown_types_and_nested_arrays_are_refused() {
        let b = sample().to_bytes();
        let at = type_id_at(&b, "m", 2);
        assert_eq!(b[at], GgmlType::Q8_0.id() as u8);
        for (id, want) in [(16u32, "tensor `m` has ggml type 16 (IQ2_XXS), which we do not read"), (99, "type 99,")] {
            let mut bad = b.clone();
            bad[at..at + 4].copy_from_slice(&id.to_le_bytes());
            let e = Gguf::parse(&bad, "f.gguf").unwrap_err().to_string();
            assert!(e.starts_with("f.gguf: ") && e.contains(want), "{e}");
        }

        let mut g = Gguf::default();
        g.kv.push(("nested".into(), Value::U32s(vec![1, 2])));
        let mut b = g.to_bytes();
        let at = find(&b, b"nested") + "nested".len() + 4;
        b[at..at + 4].copy_from_slice(&T_ARRAY.to_le_bytes());
        let e = Gguf::parse(&b, "f.gguf").unwrap_err().to_string();
        assert!(e.starts_with("f.gguf: key `nested`: an array of arrays"), "{e}");
        b[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
        let e = Gguf::parse(&b, "f.gguf").unwrap_err().to_string();
        assert!(e.contains("key `nested`: array of value type 13"), "{e}");

        let mut g = sample();
        g.tensors[1] = GgufTensor { name: "k".into(), ne: vec![128, 2], ty: GgmlType::Q6_K, data: vec![0; 210] };
        let e = Gguf::parse(&g.to_bytes(), "f.gguf").unwrap_err().to_string();
        assert!(e.contains("tensor `k` (Q6_K) has rows of 128 values, not a multiple of its 256-value blocks"), "{e}");
    }
}
