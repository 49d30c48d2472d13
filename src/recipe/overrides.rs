//! `--set a.b.c=value`: overrides applied to the parsed TOML table before it becomes a
//! [`super::Recipe`], so an overridden recipe is deserialized and validated like any other.

use crate::error::{Error, Result};

/// `a.b.c=value`: the value is read as a TOML value when it parses as one, else as a string,
/// so `--set run.name=foo` works without quotes.
pub(super) fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    // A newline would let one --set write further keys of its own ("x=1\n[run]\n...").
    if ov.contains(['\n', '\r']) {
        return Err(Error::input(format!("--set {ov:?}: a line break in an override; one KEY=VALUE per --set")));
    }
    let (key, raw) = ov
        .split_once('=')
        .ok_or_else(|| Error::input(format!("--set {ov}: expected KEY=VALUE, e.g. optim.lr=3e-4")))?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::input(format!("--set {ov}: `{key}` is not a key path like optim.lr")));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur =
            entry.as_table_mut().ok_or_else(|| Error::input(format!("--set {ov}: `{p}` is a value, not a section")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
