//! Byte-level BPE through the `tokenizers` crate, saved as a standard `tokenizer.json` so that
//! other tools read the same vocabulary. Byte-level means every UTF-8 string round-trips.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder,
};

use crate::error::{Error, Result};

pub const EOS: &str = "<|endoftext|>";
/// End-of-sequence spellings of common tokenizers, tried in order when loading one.
const EOS_CANDIDATES: [&str; 5] = [EOS, "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
    /// The beginning-of-sequence token the tokenizer puts before a text, if it does (Llama's
    /// `<s>` / `<|begin_of_text|>`): a model trained with it expects it at position 0, and its
    /// logits without it are degraded.
    pub bos_id: Option<u32>,
}

impl Tokenizer {
    /// Train a byte-level BPE of `vocab_size` (including the 256 byte symbols, EOS and the
    /// `specials`, which stay whole tokens).
    pub fn train<'a>(
        docs: impl Iterator<Item = &'a str> + Send,
        vocab_size: usize,
        min_frequency: u64,
        specials: &[String],
    ) -> Result<Self> {
        let mut builder = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::default()
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
            .special_tokens(
                std::iter::once(EOS)
                    .chain(specials.iter().map(String::as_str).filter(|s| *s != EOS))
                    .map(|s| AddedToken::from(s, true))
                    .collect(),
            )
            .build();
        builder.train(&mut trainer, docs).map_err(|e| Error::runtime(format!("tokenizer training failed: {e}")))?;
        Self::wrap(builder.into(), "trained tokenizer")
    }

    /// A `tokenizer.json`; an `add_bos_token` in the `tokenizer_config.json` beside it
    /// overrides its post-processor, as transformers does.
    pub fn load(path: &Path) -> Result<Self> {
        // Bounded and regular first: the tokenizers crate reads whatever the path gives.
        let bytes = crate::error::read_bounded(path, crate::error::TEXT_LIMIT)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::input(format!("{}: not a valid tokenizer.json: {e}", path.display())))?;
        let mut tok = Self::wrap(inner, &path.display().to_string())?;
        let config = path.with_file_name("tokenizer_config.json");
        if config.is_file() {
            let v: serde_json::Value = crate::util::read_json(&config)?;
            match v.get("add_bos_token").and_then(|b| b.as_bool()) {
                Some(false) => tok.bos_id = None,
                Some(true) if tok.bos_id.is_none() => {
                    let name = v.get("bos_token").and_then(|b| b.as_str().or_else(|| b.get("content")?.as_str()));
                    tok.bos_id = Some(name.and_then(|n| tok.inner.token_to_id(n)).ok_or_else(|| {
                        Error::input(format!(
                            "{}: add_bos_token = true but bos_token {name:?} is not in the vocabulary",
                            config.display()
                        ))
                    })?);
                }
                _ => {}
            }
        }
        Ok(tok)
    }

    fn wrap(inner: tokenizers::Tokenizer, what: &str) -> Result<Self> {
        let eos_id = EOS_CANDIDATES
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| Error::input(format!("{what}: no end-of-sequence token (looked for {EOS_CANDIDATES:?})")))?;
        // What the post-processor puts before a text: encode one with and without special
        // tokens and compare (a template may also append EOS, which documents get anyway).
        let ids = |special: bool| {
            inner.encode("a", special).map(|e| e.get_ids().to_vec()).map_err(|e| Error::input(format!("{what}: {e}")))
        };
        let (with, without) = (ids(true)?, ids(false)?);
        let bos_id = (with.len() > without.len() && with[1..].starts_with(&without)).then(|| with[0]);
        Ok(Tokenizer { inner, eos_id, bos_id })
    }

    /// Written atomically (temporary file, fsync, rename): a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| Error::runtime(format!("{}: cannot write tokenizer: {e}", path.display())))?;
        crate::util::write_atomic(path, json.as_bytes())
    }

    /// A document as the model sees it in training: BOS (when the tokenizer adds one), its
    /// tokens, then EOS, which separates it from the next document in the packed stream.
    pub fn encode_doc(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos_id.into_iter().collect();
        ids.extend(self.encode(text)?);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// A marked chat or prompt/completion document (see [`crate::data::chat`]) as it was
    /// rendered, special tokens parsed and nothing added, with each token's loss flag: whether
    /// its text overlaps a marked span.
    pub fn encode_marked(&self, marked: &str) -> Result<(Vec<u32>, Vec<bool>)> {
        let (text, spans) = crate::data::chat::unmark(marked);
        let enc = self.inner.encode(text.as_str(), false).map_err(|e| Error::runtime(format!("tokenizer: {e}")))?;
        Ok((enc.get_ids().to_vec(), crate::data::chat::token_mask(enc.get_offsets(), &spans)))
    }

    /// The spelling of token `id`, if the vocabulary has it.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is an added (special) token: `<|im_end|>`, `<|eot_id|>`, EOS.
    pub fn is_added(&self, id: u32) -> bool {
        self.inner.get_added_tokens_decoder().contains_key(&id)
    }

    /// The id of a token spelled `token` (a special token's text), if the vocabulary has it.
    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// A prompt: BOS (when the tokenizer adds one) and its tokens.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos_id.into_iter().collect();
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The first id at which `self` and `other` spell a token differently (or only one has
    /// it), with both spellings: `None` when the vocabularies are the same id for id.
    pub fn first_difference(&self, other: &Tokenizer) -> Option<(u32, Option<String>, Option<String>)> {
        let n = self.inner.get_vocab_size(true).max(other.inner.get_vocab_size(true)) as u32;
        (0..n).find_map(|id| {
            let (a, b) = (self.inner.id_to_token(id), other.inner.id_to_token(id));
            (a != b).then_some((id, a, b))
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(|e| Error::runtime(format!("tokenizer: {e}")))?.get_ids().to_vec())
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
        let tok = Tokenizer::train(docs.iter().map(|s| s.as_str()), 400, 2, &[]).unwrap();
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
        for s in [
            "",
            " ",
            "  leading and trailing  ",
            "naïve café, Größe, 東京, Ωμέγα",
            "emoji 🦀🔥 and \u{200d} joiner",
            "tabs\tand\nnewlines\r\n",
            "\u{0}\u{7f}\u{10ffff}",
        ] {
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
