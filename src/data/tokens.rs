//! A token stream in memory, or memory-mapped from a prepared `*.u32` file, so that training on
//! a corpus of billions of tokens does not need their 4 bytes each in RAM (the page cache holds
//! what the batches touch).

use std::path::Path;

use crate::error::{Error, Result};

pub enum Tokens {
    Owned(Vec<u32>),
    /// Little-endian u32s; only on little-endian hosts, where they are the in-memory layout.
    Mapped(memmap2::Mmap),
}

impl Tokens {
    /// Map `path` (little-endian u32 token ids), checking its length and that every id is
    /// below `vocab` (one pass over the file, no copy).
    pub fn open(path: &Path, expect: usize, vocab: usize) -> Result<Tokens> {
        let err = |what: String| Error::input(format!("{}: {what}", path.display()));
        let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let len = f.metadata().map_err(|e| err(e.to_string()))?.len() as usize;
        if !len.is_multiple_of(4) || len / 4 != expect {
            return Err(err(format!("corrupt token file ({len} bytes; expected {expect} tokens)")));
        }
        let toks = if cfg!(target_endian = "little") && len > 0 {
            // SAFETY: read-only map of a file the run owns; a concurrent writer could change the
            // ids under us, which the vocabulary check below sees only as of now (prepared files
            // are written once, atomically, and never modified).
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| err(e.to_string()))?;
            Tokens::Mapped(map)
        } else {
            let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            Tokens::Owned(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        if let Some(bad) = toks.iter().find(|&&t| t as usize >= vocab) {
            return Err(err(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        Ok(toks)
    }
}

/// Flag bits of a prepared token (`*.flags`, one byte per token of the `*.u32` beside it).
/// The token is a target that carries the loss.
pub const LOSS: u8 = 1;
/// The token begins a document.
pub const DOC_START: u8 = 2;

/// The flags of a token stream, in memory or memory-mapped.
pub enum Flags {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Flags {
    /// Map `path`, checking that it has one byte per token and no unknown bits.
    pub fn open(path: &Path, expect: usize) -> Result<Flags> {
        let err = |what: String| Error::input(format!("{}: {what}", path.display()));
        let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let len = f.metadata().map_err(|e| err(e.to_string()))?.len() as usize;
        if len != expect {
            return Err(err(format!("corrupt flags file ({len} bytes; expected {expect}, one per token)")));
        }
        let flags = if len > 0 {
            // SAFETY: as for the token files (written once, atomically, never modified).
            Flags::Mapped(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| err(e.to_string()))?)
        } else {
            Flags::Owned(Vec::new())
        };
        if let Some(bad) = flags.iter().find(|&&b| b & !(LOSS | DOC_START) != 0) {
            return Err(err(format!("unknown token flag bits {bad:#04x}")));
        }
        Ok(flags)
    }
}

impl From<Vec<u8>> for Flags {
    fn from(v: Vec<u8>) -> Self {
        Flags::Owned(v)
    }
}

impl std::ops::Deref for Flags {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Flags::Owned(v) => v,
            Flags::Mapped(m) => m,
        }
    }
}

impl From<Vec<u32>> for Tokens {
    fn from(v: Vec<u32>) -> Self {
        Tokens::Owned(v)
    }
}

impl std::ops::Deref for Tokens {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Tokens::Owned(v) => v,
            Tokens::Mapped(m) => {
                let (head, body, tail) = unsafe { m.align_to::<u32>() };
                // A map starts on a page boundary and the length was checked to be 4-aligned.
                debug_assert!(head.is_empty() && tail.is_empty());
                body
            }
        }
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} ids{})", self.len(), if matches!(self, Tokens::Mapped(_)) { ", mapped" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_file_reads_back_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("distill-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.u32");
        let ids: Vec<u32> = (0..1000u32).map(|i| (i * 7919) % 500).collect();
        std::fs::write(&p, ids.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let t = Tokens::open(&p, 1000, 500).unwrap();
        assert!(matches!(t, Tokens::Mapped(_)));
        assert_eq!(&t[..], &ids[..]);
        let e = Tokens::open(&p, 999, 500).unwrap_err().to_string();
        assert!(e.contains("t.u32") && e.contains("expected 999 tokens"), "{e}");
        let e = Tokens::open(&p, 1000, 400).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary (400)"), "{e}");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert!(Tokens::open(&p, 0, 500).unwrap_err().to_string().contains("corrupt token file"));
        // Flags: one byte per token, known bits only.
        let f = dir.join("t.flags");
        std::fs::write(&f, [LOSS | DOC_START, 0, LOSS]).unwrap();
        assert_eq!(&Flags::open(&f, 3).unwrap()[..], &[LOSS | DOC_START, 0, LOSS]);
        let e = Flags::open(&f, 4).err().unwrap().to_string();
        assert!(e.contains("t.flags: corrupt flags file (3 bytes; expected 4, one per token)"), "{e}");
        std::fs::write(&f, [LOSS, 0x84]).unwrap();
        let e = Flags::open(&f, 2).err().unwrap().to_string();
        assert!(e.contains("t.flags: unknown token flag bits 0x84"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
