//! Document filters, each switchable by its threshold, and the report of what each removed.

use std::collections::HashSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::recipe::{Dedup, FilterSection};

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub removed_docs: usize,
    pub removed_chars: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterReport {
    pub docs_in: usize,
    pub chars_in: usize,
    pub rules: Vec<RuleReport>,
    pub docs_kept: usize,
    pub chars_kept: usize,
}

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

/// Apply the rules in order (length, symbols, exact dedup); a document is charged to the first
/// rule that removes it.
pub fn apply(docs: Vec<String>, cfg: &FilterSection) -> (Vec<String>, FilterReport) {
    let names = ["min_chars", "max_chars", "max_symbol_ratio", "dedup_exact"];
    let mut rules: Vec<RuleReport> = names
        .iter()
        .map(|r| RuleReport { rule: r.to_string(), removed_docs: 0, removed_chars: 0, examples: vec![] })
        .collect();
    let docs_in = docs.len();
    let chars_in = docs.iter().map(|d| d.chars().count()).sum();
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(docs.len());
    for doc in docs {
        let chars = doc.chars().count();
        let removed_by = if !cfg.enabled {
            None
        } else if chars < cfg.min_chars {
            Some(0)
        } else if chars > cfg.max_chars {
            Some(1)
        } else if symbol_ratio(&doc) > cfg.max_symbol_ratio {
            Some(2)
        } else if cfg.dedup == Dedup::Exact && !seen.insert(dedup_key(&doc)) {
            Some(3)
        } else {
            None
        };
        match removed_by {
            Some(r) => {
                let rep = &mut rules[r];
                rep.removed_docs += 1;
                rep.removed_chars += chars;
                if rep.examples.len() < 3 {
                    rep.examples.push(doc.chars().take(80).collect());
                }
            }
            None => kept.push(doc),
        }
    }
    let report = FilterReport {
        docs_in,
        chars_in,
        rules,
        docs_kept: kept.len(),
        chars_kept: kept.iter().map(|d| d.chars().count()).sum(),
    };
    (kept, report)
}

/// Exact duplicates up to whitespace and case.
fn dedup_key(doc: &str) -> [u8; 32] {
    let norm: Vec<String> = doc.split_whitespace().map(|w| w.to_lowercase()).collect();
    Sha256::digest(norm.join(" ").as_bytes()).into()
}

impl FilterReport {
    pub fn table(&self) -> String {
        let mut s = format!("{:<20} {:>10} {:>12}\n", "filter", "docs", "chars");
        s += &format!("{:<20} {:>10} {:>12}\n", "input", self.docs_in, self.chars_in);
        for r in &self.rules {
            s += &format!("{:<20} {:>10} {:>12}\n", format!("- {}", r.rule), r.removed_docs, r.removed_chars);
        }
        s += &format!("{:<20} {:>10} {:>12}", "kept", self.docs_kept, self.chars_kept);
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
        let cfg = FilterSection { min_chars: 10, max_chars: 60, max_symbol_ratio: 0.2, ..Default::default() };
        let docs = vec![
            "short".to_string(),
            "A perfectly ordinary sentence about Mia.".to_string(),
            "x".repeat(61),
            "<<<{{{###}}}>>> $$$ %%% ^^^ &&&".to_string(),
            "a perfectly   ordinary sentence about MIA.".to_string(),
            "Another fine sentence, with commas!".to_string(),
        ];
        let (kept, rep) = apply(docs, &cfg);
        assert_eq!(kept, vec!["A perfectly ordinary sentence about Mia.", "Another fine sentence, with commas!"]);
        let removed: Vec<usize> = rep.rules.iter().map(|r| r.removed_docs).collect();
        assert_eq!(removed, vec![1, 1, 1, 1]);
        assert_eq!(rep.docs_in, 6);
        assert_eq!(rep.docs_kept, 2);
        assert_eq!(rep.rules[0].examples, vec!["short"]);
        let off = FilterSection { enabled: false, ..cfg };
        assert_eq!(apply(vec!["short".into()], &off).0.len(), 1);
    }
}
