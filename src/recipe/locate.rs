//! Where a key is set, for error messages: `file:line:col`, the `--set` that set it, or the
//! section whose default it took, found by scanning the recipe's text line by line.

use crate::error::Error;

/// Where `key` is set: `file:line:col`, or the `--set` that set it, or the section it would
/// belong to when it took its default.
pub(super) fn locate(file: &str, text: &str, overrides: &[String], key: &str) -> String {
    if let Some(ov) = overrides.iter().rev().find(|o| {
        o.split_once('=').map(|(k, _)| k.trim()) == Some(key)
    }) {
        return format!("--set {ov}");
    }
    let mut best: Option<(usize, usize)> = None;
    let mut section_line: Option<usize> = None;
    let mut section_len = 0;
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(h) = t.strip_prefix('[') {
            section = h.split(']').next().unwrap_or("").trim_matches('[').trim().to_string();
            // The deepest section enclosing the key is where its default applies.
            if key.starts_with(&format!("{section}.")) && section.len() >= section_len {
                section_len = section.len();
                section_line = Some(i + 1);
            }
            if section == key {
                best = Some((i + 1, indent + 1));
            }
            continue;
        }
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim().trim_matches('"');
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            let full = if section.is_empty() { k.to_string() } else { format!("{section}.{k}") };
            if full == key {
                best = Some((i + 1, indent + 1));
            }
        }
    }
    match (best, section_line) {
        (Some((l, c)), _) => format!("{file}:{l}:{c}"),
        (None, Some(l)) => format!("{file}:{l} (default value in this section)"),
        (None, None) => format!("{file} (default value, key not set)"),
    }
}

/// The dotted key path of the key defined on 1-based line `line_no`, if any.
fn key_at_line(text: &str, line_no: usize) -> Option<String> {
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            section = h.split(']').next().unwrap_or("").trim_matches('[').trim().to_string();
            if i + 1 == line_no {
                return Some(section);
            }
            continue;
        }
        if i + 1 == line_no {
            let k = t.split_once('=')?.0.trim().trim_matches('"');
            return Some(if section.is_empty() { k.to_string() } else { format!("{section}.{k}") });
        }
    }
    None
}

pub(super) fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            match key_at_line(text, line) {
                Some(key) => Error::input(format!("{file}:{line}:{col}: key `{key}`: {msg}")),
                None => Error::input(format!("{file}:{line}:{col}: {msg}")),
            }
        }
        None => Error::input(format!("{file}: {msg}")),
    }
}
