//! Byte-level BPE through the `tokenizers` crate, saved as a standard `tokenizer.json` so that
//! other tools read the same vocabulary. Byte-level means every UTF-8 string round-trips.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder};

use crate::error::{Error, Result};

pub const EOS: &str = "<|endoftext|>";
/// End-of-sequence spellings of common tokenizers, tried in order when loading one.
const EOS_CANDIDATES: [&str; 5] = [EOS, "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
}

impl Tokenizer {
    /// Train a byte-level BPE of `vocab_size` (including the 256 byte symbols and EOS).
    pub fn train<'a>(docs: impl Iterator<Item = &'a str> + Send, vocab_size: usize, min_frequency: u64) -> Result<Self> {
        let mut builder = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::default()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))))
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
            .build()
            .map_err(|e| Error::runtime(format!("tokenizer: {e}")))?;
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(EOS, true)])
            .build();
        builder
            .train(&mut trainer, docs)
            .map_err(|e| Error::runtime(format!("tokenizer training failed: {e}")))?;
        Self::wrap(builder.into(), "trained tokenizer")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::input(format!("{}: not a valid tokenizer.json: {e}", path.display())))?;
        Self::wrap(inner, &path.display().to_string())
    }

    fn wrap(inner: tokenizers::Tokenizer, what: &str) -> Result<Self> {
        let eos_id = EOS_CANDIDATES
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| Error::input(format!("{what}: no end-of-sequence token (looked for {EOS_CANDIDATES:?})")))?;
        Ok(Tokenizer { inner, eos_id })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        // Atomically (tokenizers' own save writes in place).
        let json = self.inner.to_string(false).map_err(|e| Error::runtime(format!("{}: cannot write tokenizer: {e}", path.display())))?;
        crate::util::write_atomic(path, json.as_bytes())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| Error::runtime(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::runtime(format!("tokenizer: {e}")))
    }

    /// Identity of the vocabulary: a teacher, a student and data must agree on it.
    pub fn hash(&self) -> String {
        let json = self.inner.to_string(false).unwrap_or_default();
        format!("{:x}", Sha256::digest(json.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_round_trips_corpus_and_arbitrary_utf8() {
        let docs = crate::data::synth::generate(7, 300);
        let tok = Tokenizer::train(docs.iter().map(|s| s.as_str()), 400, 2).unwrap();
        assert!(tok.vocab_size() <= 400 && tok.vocab_size() > 300, "vocab {}", tok.vocab_size());
        let mut total_tokens = 0;
        let mut total_bytes = 0;
        for d in docs.iter().take(50) {
            let ids = tok.encode(d).unwrap();
            total_tokens += ids.len();
            total_bytes += d.len();
            assert_eq!(&tok.decode(&ids).unwrap(), d);
        }
        // Merges were learned: well under one token per byte on the corpus.
        assert!((total_tokens as f64) < 0.5 * total_bytes as f64);
        for s in ["", " ", "  leading and trailing  ", "naïve café, Größe, 東京, Ωμέγα", "emoji 🦀🔥 and \u{200d} joiner",
            "tabs\tand\nnewlines\r\n", "\u{0}\u{7f}\u{10ffff}"] {
            let ids = tok.encode(s).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), s, "round trip of {s:?}");
        }
        // Saved and reloaded, the vocabulary is the same one.
        let dir = std::env::temp_dir().join(format!("distill-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        tok.save(&p).unwrap();
        let back = Tokenizer::load(&p).unwrap();
        assert_eq!(back.hash(), tok.hash());
        assert_eq!(back.encode(&docs[0]).unwrap(), tok.encode(&docs[0]).unwrap());
        assert_eq!(back.eos_id, tok.eos_id);
        std::fs::remove_dir_all(&dir).ok();
    }
}
