//! The GGUF v3 container (ggml's `gguf.h`, and the `gguf` Python package's `GGUFWriter`, whose
//! byte layout this writer reproduces): a header, metadata key/values, tensor descriptions,
//! then the tensor data, each piece aligned to [`ALIGNMENT`].
//!
//! `header: "GGUF" u32 version u64 n_tensors u64 n_kv`, then each key/value as `string key,
//! u32 type, value`, each tensor as `string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type,
//! u64 offset`; strings are `u64 length` + UTF-8. `ne[0]` is the innermost (contiguous)
//! dimension: a `[rows, cols]` matrix is `ne = [cols, rows]`.
//!
//! The reader is for our tests and tools: every size it reads is checked against the bytes
//! that are there before anything is allocated from it.

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
/// `general.alignment`'s default, which we never change.
pub const ALIGNMENT: usize = 32;

/// The ggml tensor types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q8_0,
}

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q8_0 => 8,
        }
    }

    fn from_id(id: u32) -> Option<Self> {
        [GgmlType::F32, GgmlType::F16, GgmlType::Q4_0, GgmlType::Q8_0].into_iter().find(|t| t.id() == id)
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q8_0 => (32, 34),
        }
    }
}

/// A metadata value (the subset of GGUF's types that model files use).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

// GGUF value type ids.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

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

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            let array = |out: &mut Vec<u8>, ty: u32, n: usize| {
                out.extend(T_ARRAY.to_le_bytes());
                out.extend(ty.to_le_bytes());
                out.extend((n as u64).to_le_bytes());
            };
            match v {
                Value::U32(x) => out.extend(T_U32.to_le_bytes().into_iter().chain(x.to_le_bytes())),
                Value::I32(x) => out.extend(T_I32.to_le_bytes().into_iter().chain(x.to_le_bytes())),
                Value::F32(x) => out.extend(T_F32.to_le_bytes().into_iter().chain(x.to_le_bytes())),
                Value::Bool(x) => out.extend(T_BOOL.to_le_bytes().into_iter().chain([*x as u8])),
                Value::Str(s) => {
                    out.extend(T_STRING.to_le_bytes());
                    put_str(&mut out, s);
                }
                Value::Strs(xs) => {
                    array(&mut out, T_STRING, xs.len());
                    xs.iter().for_each(|s| put_str(&mut out, s));
                }
                Value::I32s(xs) => {
                    array(&mut out, T_I32, xs.len());
                    xs.iter().for_each(|x| out.extend(x.to_le_bytes()));
                }
            }
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            t.ne.iter().for_each(|n| out.extend(n.to_le_bytes()));
            out.extend(t.ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += pad(t.data.len()) as u64;
        }
        for t in &self.tensors {
            out.resize(pad(out.len()), 0);
            out.extend(&t.data);
        }
        out.resize(pad(out.len()), 0);
        out
    }

    /// Parse a GGUF file; `what` (its path) goes into every error.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Gguf> {
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
            let v = match ty {
                T_U32 => Value::U32(r.u32()?),
                T_I32 => Value::I32(r.u32()? as i32),
                T_F32 => Value::F32(f32::from_bits(r.u32()?)),
                T_BOOL => Value::Bool(r.take(1)?[0] != 0),
                T_STRING => Value::Str(r.string()?),
                T_ARRAY => {
                    let (ety, n) = (r.u32()?, r.u64()?);
                    // Each element takes at least 4 bytes: a count the file cannot hold is
                    // refused before anything is sized from it.
                    r.fits(n, 4, &key)?;
                    match ety {
                        T_STRING => Value::Strs((0..n).map(|_| r.string()).collect::<Result<_>>()?),
                        T_I32 => Value::I32s((0..n).map(|_| r.u32().map(|x| x as i32)).collect::<Result<_>>()?),
                        _ => return Err(r.bad(&format!("key `{key}`: array of type {ety} is not supported"))),
                    }
                }
                _ => return Err(r.bad(&format!("key `{key}`: value type {ty} is not supported"))),
            };
            g.kv.push((key, v));
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 4 {
                return Err(r.bad(&format!("tensor `{name}` has {n_dims} dimensions, ggml allows at most 4")));
            }
            let ne: Vec<u64> = (0..n_dims).map(|_| r.u64()).collect::<Result<_>>()?;
            let id = r.u32()?;
            let ty = GgmlType::from_id(id)
                .ok_or_else(|| r.bad(&format!("tensor `{name}` has ggml type {id}, which we do not read")))?;
            let offset = r.u64()?;
            infos.push((name, ne, ty, offset));
        }
        let data_start = pad(r.at);
        for (name, ne, ty, offset) in infos {
            let (per, size) = ty.block();
            let n = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let nbytes = n
                .filter(|n| ne.first().is_none_or(|d0| d0 % per as u64 == 0) && n / per as u64 <= bytes.len() as u64)
                .map(|n| n / per as u64 * size as u64);
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
            g.tensors.push(GgufTensor { name, ne, ty, data: bytes[range].to_vec() });
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
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
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
}
