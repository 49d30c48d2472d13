//! Where a key is set, for error messages: `file:line:col`, the `--set` that set it, or the
//! section whose default it took. Positions come from the spans of toml's own parse
//! (`DeTable`), so quoted and dotted keys, inline tables and multi-line values are read the
//! way TOML reads them.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::error::Error;

/// One key of a document: its dotted path and the spans of the key and of its value.
struct Entry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

impl Entry {
    /// Written in the text: toml gives a table it only implied (`teacher` in
    /// `[teacher.model]`, `model` in `model.d_ff = 1`) its key's span as the value's span.
    fn written(&self) -> bool {
        self.value != self.key
    }

    /// A `[section]` header: its span (starting at `[`) encloses the key.
    fn header(&self) -> bool {
        self.value.start < self.key.start && self.key.end <= self.value.end
    }

    /// Where to point: the `[` of a header, else the key.
    fn start(&self) -> usize {
        self.key.start.min(self.value.start)
    }
}

/// Every key of `text`, depth first. Best effort on a document with syntax errors (what
/// parsed is listed), so a syntax error can still name its key.
fn entries(text: &str) -> Vec<Entry> {
    fn walk(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
            out.push(Entry { path: path.clone(), key: k.span(), value: v.span() });
            match v.get_ref() {
                DeValue::Table(t) => walk(t, &path, out),
                // Arrays of tables: their keys are named without an index.
                DeValue::Array(a) => {
                    for item in a.iter() {
                        if let DeValue::Table(t) = item.get_ref() {
                            walk(t, &path, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let (root, _) = DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk(root.get_ref(), "", &mut out);
    out
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where `key` is set: `file:line:col`, or the `--set` that set it (the last one wins), or the
/// deepest `[section]` it would belong to when it took its default.
pub(super) fn locate(file: &str, text: &str, overrides: &[String], key: &str) -> String {
    if let Some(ov) = overrides.iter().rev().find(|o| o.split_once('=').map(|(k, _)| k.trim()) == Some(key)) {
        return format!("--set {ov}");
    }
    let entries = entries(text);
    if let Some(e) = entries.iter().find(|e| e.path == key && e.written()) {
        let (l, c) = line_col(text, e.start());
        return format!("{file}:{l}:{c}");
    }
    let mut section = key;
    while let Some((parent, _)) = section.rsplit_once('.') {
        section = parent;
        if let Some(e) = entries.iter().find(|e| e.path == section && e.header()) {
            let (l, _) = line_col(text, e.start());
            return format!("{file}:{l} (default value in this section)");
        }
    }
    format!("{file} (default value, key not set)")
}

/// The dotted path of the key an error at byte offset `at` is about: the innermost key whose
/// key or value spans `at`, else (a syntax error often lies past its key, as in `alpha = `)
/// the last key that starts on the same line before `at`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let entries = entries(text);
    let spans = |r: &Range<usize>| r.start <= at && at < r.end;
    let innermost = entries
        .iter()
        .flat_map(|e| [(&e.key, &e.path), (&e.value, &e.path)])
        .filter(|(r, _)| spans(r))
        .min_by_key(|(r, _)| r.len())
        .map(|(_, path)| path.clone());
    innermost.or_else(|| {
        let at = at.min(text.len());
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        entries
            .iter()
            .filter(|e| (line_start..=at).contains(&e.start()))
            .max_by_key(|e| e.start())
            .map(|e| e.path.clone())
    })
}

/// A toml parse or type error in `text` (the contents of `file`), with its position and key.
pub(super) fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            match key_at(text, span.start) {
                Some(key) => Error::input(format!("{file}:{line}:{col}: key `{key}`: {msg}")),
                None => Error::input(format!("{file}:{line}:{col}: {msg}")),
            }
        }
        None => Error::input(format!("{file}: {msg}")),
    }
}
