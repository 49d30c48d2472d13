//! Document filters, each switchable by its threshold, and the report of what each removed.
//!
//! Rules run in order and a document is charged to the first rule that removes it: length,
//! character classes (symbols, letters, upper case), repeated word n-grams, exact duplicates,
//! MinHash-LSH near-duplicates. The teacher-perplexity band runs later, on tokens (data/mod.rs).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{Dedup, FilterSection};
use crate::rng::SplitMix;

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub removed_docs: usize,
    pub removed_chars: usize,
    /// Filled in once the tokenizer exists.
    pub removed_tokens: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterReport {
    pub docs_in: usize,
    pub chars_in: usize,
    pub tokens_in: usize,
    pub rules: Vec<RuleReport>,
    pub docs_kept: usize,
    pub chars_kept: usize,
    pub tokens_kept: usize,
}

pub const RULES: [&str; 9] = [
    "min_chars",
    "max_chars",
    "max_symbol_ratio",
    "min_alpha_ratio",
    "max_upper_ratio",
    "max_repeated_ngram_share",
    "dedup_exact",
    "dedup_minhash",
    "teacher_ppl",
];

/// Characters that are neither alphanumeric, whitespace nor everyday punctuation.
fn symbol_ratio(doc: &str) -> f64 {
    let mut n = 0usize;
    let mut sym = 0usize;
    for c in doc.chars() {
        n += 1;
        if !(c.is_alphanumeric() || c.is_whitespace() || ".,;:!?'\"()-".contains(c)) {
            sym += 1;
        }
    }
    if n == 0 { 0.0 } else { sym as f64 / n as f64 }
}

/// (letters / characters, upper-case letters / letters).
fn letter_ratios(doc: &str) -> (f64, f64) {
    let (mut n, mut alpha, mut upper) = (0usize, 0usize, 0usize);
    for c in doc.chars() {
        n += 1;
        if c.is_alphabetic() {
            alpha += 1;
            if c.is_uppercase() {
                upper += 1;
            }
        }
    }
    (alpha as f64 / n.max(1) as f64, upper as f64 / alpha.max(1) as f64)
}

fn words(doc: &str) -> Vec<String> {
    doc.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

fn hash64(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Hashes of the document's word n-grams (a document shorter than n is one shingle).
pub fn shingles(doc: &str, n: usize) -> HashSet<u64> {
    let w = words(doc);
    if w.len() < n {
        return HashSet::from([hash64(w.join(" ").as_bytes())]);
    }
    w.windows(n).map(|g| hash64(g.join(" ").as_bytes())).collect()
}

/// Share of the document's word n-grams that repeat an earlier one.
pub fn repeated_ngram_share(doc: &str, n: usize) -> f64 {
    let w = words(doc);
    if w.len() < n + 1 {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let grams = w.len() + 1 - n;
    let repeats = w.windows(n).filter(|g| !seen.insert(g.join(" "))).count();
    repeats as f64 / grams as f64
}

/// MinHash-LSH near-duplicate index: a document whose signature shares a band bucket with an
/// earlier kept document, and whose estimated Jaccard similarity with it (the share of equal
/// signature entries) reaches the threshold, is a near-duplicate.
pub struct MinHashLsh {
    seeds: Vec<u64>,
    bands: usize,
    threshold: f64,
    buckets: HashMap<(usize, u64), Vec<usize>>,
    kept: Vec<Vec<u64>>,
}

impl MinHashLsh {
    pub fn new(perms: usize, bands: usize, threshold: f64) -> Self {
        let mut rng = SplitMix(0x5151_ab1e);
        MinHashLsh {
            seeds: (0..perms).map(|_| rng.next_u64()).collect(),
            bands,
            threshold,
            buckets: HashMap::new(),
            kept: Vec::new(),
        }
    }

    fn signature(&self, sh: &HashSet<u64>) -> Vec<u64> {
        self.seeds.iter().map(|&s| sh.iter().map(|&x| SplitMix(x ^ s).next_u64()).min().unwrap_or(u64::MAX)).collect()
    }

    /// True if the document is a near-duplicate of one kept before; otherwise keep it.
    pub fn is_duplicate(&mut self, sh: &HashSet<u64>) -> bool {
        let sig = self.signature(sh);
        self.is_duplicate_sig(sig)
    }

    /// `is_duplicate` on a signature computed beforehand (possibly on another thread).
    fn is_duplicate_sig(&mut self, sig: Vec<u64>) -> bool {
        let r = sig.len() / self.bands;
        let keys: Vec<(usize, u64)> = (0..self.bands)
            .map(|b| {
                let bytes: Vec<u8> = sig[b * r..(b + 1) * r].iter().flat_map(|x| x.to_le_bytes()).collect();
                (b, hash64(&bytes))
            })
            .collect();
        let mut checked = HashSet::new();
        for k in &keys {
            for &cand in self.buckets.get(k).map(|v| v.as_slice()).unwrap_or(&[]) {
                if checked.insert(cand) {
                    let same = self.kept[cand].iter().zip(&sig).filter(|(a, b)| a == b).count();
                    if same as f64 / sig.len() as f64 >= self.threshold {
                        return true;
                    }
                }
            }
        }
        let id = self.kept.len();
        for k in keys {
            self.buckets.entry(k).or_default().push(id);
        }
        self.kept.push(sig);
        false
    }
}

/// The text rules with their state (dedup hashes, the LSH index) and the running report, one
/// document at a time.
pub struct Filter<'a> {
    cfg: &'a FilterSection,
    seen: HashSet<[u8; 32]>,
    lsh: MinHashLsh,
    pub report: FilterReport,
}

impl<'a> Filter<'a> {
    pub fn new(cfg: &'a FilterSection) -> Self {
        let rules = RULES
            .iter()
            .map(|r| RuleReport {
                rule: r.to_string(),
                removed_docs: 0,
                removed_chars: 0,
                removed_tokens: 0,
                examples: vec![],
            })
            .collect();
        Filter {
            cfg,
            seen: HashSet::new(),
            lsh: MinHashLsh::new(cfg.minhash_perms, cfg.minhash_bands, cfg.minhash_threshold),
            report: FilterReport {
                docs_in: 0,
                chars_in: 0,
                tokens_in: 0,
                rules,
                docs_kept: 0,
                chars_kept: 0,
                tokens_kept: 0,
            },
        }
    }

    /// The index of the rule that removes `doc` (charged in the report), or `None` to keep it.
    pub fn check(&mut self, doc: &str) -> Option<usize> {
        let v = self.inspect(doc);
        self.decide(doc, v)
    }

    /// What can be computed from `doc` alone (the stateless rules, its dedup key and MinHash
    /// signature): safe to run on many documents in parallel before `decide`.
    pub fn inspect(&self, doc: &str) -> Inspection {
        let cfg = self.cfg;
        let chars = doc.chars().count();
        let rule = if cfg.enabled { text_rule(doc, chars, cfg) } else { None };
        let pending = cfg.enabled && rule.is_none() && cfg.dedup != Dedup::None;
        Inspection {
            chars,
            rule,
            key: pending.then(|| dedup_key(doc)),
            sig: (pending && cfg.dedup == Dedup::Minhash).then(|| self.lsh.signature(&shingles(doc, cfg.ngram_words))),
        }
    }

    /// Apply the dedup state to an inspected document, in source order, and charge the report.
    pub fn decide(&mut self, doc: &str, v: Inspection) -> Option<usize> {
        self.report.docs_in += 1;
        self.report.chars_in += v.chars;
        let removed_by = v.rule.or_else(|| {
            if v.key.is_some_and(|k| !self.seen.insert(k)) {
                return Some(6);
            }
            v.sig.and_then(|sig| self.lsh.is_duplicate_sig(sig).then_some(7))
        });
        match removed_by {
            Some(r) => note(&mut self.report.rules[r], doc, v.chars),
            None => {
                self.report.docs_kept += 1;
                self.report.chars_kept += v.chars;
            }
        }
        removed_by
    }
}

/// A document's verdict under the rules that need no other document (see [`Filter::inspect`]).
pub struct Inspection {
    chars: usize,
    rule: Option<usize>,
    key: Option<[u8; 32]>,
    sig: Option<Vec<u64>>,
}

/// Apply the text rules in order; a document is charged to the first rule that removes it.
/// Returns the kept documents, the report, and the removed ones with their rule index (for
/// token counts once a tokenizer exists).
pub fn apply(docs: Vec<String>, cfg: &FilterSection) -> (Vec<String>, FilterReport, Vec<(usize, String)>) {
    let mut f = Filter::new(cfg);
    let mut kept = Vec::with_capacity(docs.len());
    let mut removed = Vec::new();
    for doc in docs {
        match f.check(&doc) {
            Some(r) => removed.push((r, doc)),
            None => kept.push(doc),
        }
    }
    (kept, f.report, removed)
}

fn note(rep: &mut RuleReport, doc: &str, chars: usize) {
    rep.removed_docs += 1;
    rep.removed_chars += chars;
    if rep.examples.len() < 3 {
        rep.examples.push(doc.chars().take(100).collect());
    }
}

/// The first of the text rules that removes `doc` (length, character classes, repetition).
fn text_rule(doc: &str, chars: usize, cfg: &FilterSection) -> Option<usize> {
    if chars < cfg.min_chars {
        return Some(0);
    }
    if chars > cfg.max_chars {
        return Some(1);
    }
    if symbol_ratio(doc) > cfg.max_symbol_ratio {
        return Some(2);
    }
    let (alpha, upper) = letter_ratios(doc);
    if alpha < cfg.min_alpha_ratio {
        return Some(3);
    }
    if upper > cfg.max_upper_ratio {
        return Some(4);
    }
    if cfg.max_repeated_ngram_share < 1.0 && repeated_ngram_share(doc, cfg.ngram_words) > cfg.max_repeated_ngram_share {
        return Some(5);
    }
    None
}

/// Exact duplicates up to whitespace and case.
pub fn dedup_key(doc: &str) -> [u8; 32] {
    let norm: Vec<String> = doc.split_whitespace().map(|w| w.to_lowercase()).collect();
    Sha256::digest(norm.join(" ").as_bytes()).into()
}

impl FilterReport {
    /// Charge `doc` (with its token count) to the teacher-perplexity rule.
    pub fn remove_by_teacher_ppl(&mut self, doc: &str, tokens: usize) {
        let chars = doc.chars().count();
        let r = &mut self.rules[8];
        note(r, doc, chars);
        r.removed_tokens += tokens;
        self.docs_kept -= 1;
        self.chars_kept -= chars;
    }

    pub fn table(&self) -> String {
        let mut s = format!("{:<26} {:>9} {:>11} {:>11}\n", "filter", "docs", "chars", "tokens");
        s += &format!("{:<26} {:>9} {:>11} {:>11}\n", "input", self.docs_in, self.chars_in, self.tokens_in);
        for r in self.rules.iter() {
            s += &format!(
                "{:<26} {:>9} {:>11} {:>11}\n",
                format!("- {}", r.rule),
                r.removed_docs,
                r.removed_chars,
                r.removed_tokens
            );
        }
        s += &format!("{:<26} {:>9} {:>11} {:>11}", "kept", self.docs_kept, self.chars_kept, self.tokens_kept);
        for r in self.rules.iter().filter(|r| !r.examples.is_empty()) {
            s += &format!("\n  removed by {}: {:?}", r.rule, r.examples[0]);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_removes_what_it_should() {
        let cfg = FilterSection {
            min_chars: 10,
            max_chars: 80,
            max_symbol_ratio: 0.2,
            dedup: Dedup::Minhash,
            ..Default::default()
        };
        let docs = vec![
            "short".to_string(),
            "A perfectly ordinary sentence about Mia and her red ball.".to_string(),
            "x".repeat(81),
            "<<<{{{###}}}>>> $$$ %%% ^^^ &&&".to_string(),
            "1234 5678 9012 3456 7890 1234 5678".to_string(),
            "THE CAT SAT ON THE MAT AND SHOUTED".to_string(),
            "buy now buy now buy now buy now buy now".to_string(),
            "a perfectly   ordinary sentence about MIA and her red ball.".to_string(),
            "A perfectly ordinary sentence about Mia and her red ball!!".to_string(),
            "Another fine sentence, with commas!".to_string(),
        ];
        let (kept, rep, removed) = apply(docs, &cfg);
        assert_eq!(
            kept,
            vec!["A perfectly ordinary sentence about Mia and her red ball.", "Another fine sentence, with commas!"]
        );
        let counts: Vec<usize> = rep.rules.iter().map(|r| r.removed_docs).collect();
        assert_eq!(counts, vec![1, 1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(removed.len(), 8);
        assert_eq!(rep.docs_in, 10);
        assert_eq!(rep.docs_kept, 2);
        assert_eq!(rep.rules[0].examples, vec!["short"]);
        let off = FilterSection { enabled: false, ..cfg };
        assert_eq!(apply(vec!["short".into()], &off).0.len(), 1);
    }

    #[test]
    fn repeated_ngram_share_counts_repeats() {
        // 6 trigrams (abc bca cab abc bca cab): the last 3 repeat earlier ones.
        assert!((repeated_ngram_share("a b c a b c a b", 3) - 0.5).abs() < 1e-12);
        assert_eq!(repeated_ngram_share("one two three four five", 3), 0.0);
    }

    fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
        a.intersection(b).count() as f64 / a.union(b).count() as f64
    }

    /// Recall and precision of MinHash-LSH on a constructed set: 300 stories, near-duplicates
    /// made by replacing a few words of some, and the truth from exact Jaccard similarity of
    /// their word-trigram sets.
    #[test]
    fn minhash_finds_near_duplicates_with_high_recall_and_precision() {
        let mut rng = SplitMix(77);
        let base = crate::data::synth::generate(5, 300);
        let mut docs = base.clone();
        for i in 0..150 {
            let src = &base[rng.below(base.len())];
            let mut w: Vec<String> = src.split(' ').map(str::to_string).collect();
            // Light edits (truth: mostly near-duplicates) or heavy ones (mostly not).
            let edits = if i % 3 == 0 { w.len() / 4 } else { 1 + rng.below(3) };
            for _ in 0..edits {
                let j = rng.below(w.len());
                w[j] = format!("zq{}", rng.below(1000));
            }
            docs.insert(300 + rng.below(docs.len() - 299), w.join(" "));
        }
        let threshold = 0.8;
        let sh: Vec<HashSet<u64>> = docs.iter().map(|d| shingles(d, 3)).collect();
        let mut lsh = MinHashLsh::new(128, 16, threshold);
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        let mut kept: Vec<usize> = Vec::new();
        for (i, s) in sh.iter().enumerate() {
            let truth = kept.iter().any(|&k| jaccard(&sh[k], s) >= threshold);
            let said = lsh.is_duplicate(s);
            match (said, truth) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
            if !said {
                kept.push(i);
            }
        }
        let recall = tp as f64 / (tp + fn_) as f64;
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        println!(
            "minhash: {tp} true positives, {fp} false positives, {fn_} missed: recall {recall:.3}, precision {precision:.3}"
        );
        assert!(tp + fn_ >= 60, "the set has near-duplicates to find ({})", tp + fn_);
        assert!(recall >= 0.9 && precision >= 0.9, "recall {recall}, precision {precision}");
    }
}
