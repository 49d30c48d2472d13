//! Where documents come from: our synthetic generator, plain text files (documents separated
//! by blank lines), JSONL (one object per line) or Parquet (one row per document). JSONL and
//! Parquet rows are text, chat messages or prompt/completion pairs (`data.format`), rendered
//! by [`super::chat::Renderer`].
//!
//! A bad line or row (invalid UTF-8, broken JSON, a missing field, a malformed message, a
//! template error) is counted and reported with its file and line (Parquet: row), then
//! skipped, unless the recipe says `strict = true`.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::DataJob;
use super::config::{DataSection, SourceKind, SyntheticFormat};
use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, Serialize)]
pub struct BadLines {
    pub count: usize,
    /// The first few, as `file:line: reason`.
    pub examples: Vec<String>,
}

impl BadLines {
    fn push(&mut self, strict: bool, where_: String) -> Result<()> {
        if strict {
            return Err(Error::input(format!("{where_} (data.strict = true)")));
        }
        self.count += 1;
        if self.examples.len() < 5 {
            self.examples.push(where_);
        }
        Ok(())
    }
}

/// The source as errors name it: the files (`data.paths`) or the generator.
pub fn describe(data: &DataSection) -> String {
    match data.source {
        SourceKind::Synthetic => format!("data.source = \"synthetic\" ({} documents)", data.synthetic_docs),
        _ => data.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    }
}

pub fn load(job: &DataJob) -> Result<(Vec<String>, BadLines)> {
    let mut docs = Vec::new();
    let bad = for_each(job, &mut |d| {
        docs.push(d);
        Ok(())
    })?;
    Ok((docs, bad))
}

/// Hand every document to `sink` in source order, one at a time (what streaming preparation
/// reads with); returns the bad lines skipped.
pub fn for_each(job: &DataJob, sink: &mut dyn FnMut(String) -> Result<()>) -> Result<BadLines> {
    let r = job.renderer();
    for_each_row(job, &|row| r.document(row), sink)
}

/// [`for_each`] with each JSONL or Parquet row (and each synthetic dialogue) made into a string
/// by `row` instead of rendered as a document (plain text files and synthetic stories come as
/// they are): what `distill synth` reads its prompts with.
pub fn for_each_row(
    job: &DataJob,
    row: &dyn Fn(&serde_json::Value) -> std::result::Result<String, String>,
    sink: &mut dyn FnMut(String) -> Result<()>,
) -> Result<BadLines> {
    let (data, seed) = (job.data, job.seed);
    let r = row;
    let mut bad = BadLines::default();
    // A stop (Ctrl-C, SIGTERM) ends the pass at the next document.
    let sink = &mut |doc: String| -> Result<()> {
        if crate::util::STOP.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::error::Error::Interrupted(
                "stopped during data preparation (it starts over on resume)".into(),
            ));
        }
        sink(doc)
    };
    match data.source {
        SourceKind::Synthetic => {
            let mut g = super::synth::StoryGen::new(seed);
            for i in 0..data.synthetic_docs {
                let story = g.next_story();
                match data.synthetic_format {
                    SyntheticFormat::Text => sink(story)?,
                    SyntheticFormat::Chat => match r(&super::synth::chat_row(&story, &data.messages_field)) {
                        Ok(doc) => sink(doc)?,
                        Err(e) => bad.push(data.strict, format!("synthetic dialogue {}: {e}", i + 1))?,
                    },
                }
            }
        }
        SourceKind::Text => {
            for p in &data.paths {
                read_text(p, data.strict, sink, &mut bad)?;
            }
        }
        SourceKind::Jsonl => {
            // A file name with wildcards names shards (what `distill synth` writes).
            for pattern in &data.paths {
                let files = match pattern.to_string_lossy().contains(['*', '?']) {
                    true => super::parquet_rows::expand_glob(pattern)
                        .map_err(|e| Error::input(format!("data.paths: {e}")))?,
                    false => vec![pattern.clone()],
                };
                for p in &files {
                    read_jsonl(p, data.strict, r, sink, &mut bad)?;
                }
            }
        }
        SourceKind::Parquet => {
            for p in parquet_files(data)? {
                read_parquet(&p, data, r, sink, &mut bad)?;
            }
        }
    }
    Ok(bad)
}

fn lines(path: &Path) -> Result<impl Iterator<Item = std::io::Result<Vec<u8>>>> {
    let f = crate::error::open_regular(path)?;
    Ok(std::io::BufReader::new(f).split(b'\n'))
}

fn read_text(path: &Path, strict: bool, docs: &mut dyn FnMut(String) -> Result<()>, bad: &mut BadLines) -> Result<()> {
    let mut cur = String::new();
    for (i, line) in lines(path)?.enumerate() {
        let line = line.map_err(|e| Error::runtime(format!("{}: read error: {e}", path.display())))?;
        let Ok(line) = String::from_utf8(line) else {
            bad.push(strict, format!("{}:{}: invalid UTF-8", path.display(), i + 1))?;
            continue;
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !cur.is_empty() {
                docs(std::mem::take(&mut cur))?;
            }
        } else {
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(line);
        }
    }
    if !cur.is_empty() {
        docs(cur)?;
    }
    Ok(())
}

type RowFn<'a> = &'a dyn Fn(&serde_json::Value) -> std::result::Result<String, String>;

fn read_jsonl(
    path: &Path,
    strict: bool,
    r: RowFn,
    docs: &mut dyn FnMut(String) -> Result<()>,
    bad: &mut BadLines,
) -> Result<()> {
    for (i, line) in lines(path)?.enumerate() {
        let line = line.map_err(|e| Error::runtime(format!("{}: read error: {e}", path.display())))?;
        let at = || format!("{}:{}", path.display(), i + 1);
        let Ok(line) = String::from_utf8(line) else {
            bad.push(strict, format!("{}: invalid UTF-8", at()))?;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Err(e) => bad.push(strict, format!("{}: invalid JSON: {e}", at()))?,
            Ok(v) => match r(&v) {
                Ok(doc) => docs(doc)?,
                Err(e) => bad.push(strict, format!("{}: {e}", at()))?,
            },
        }
    }
    Ok(())
}

/// The Parquet files of `data.paths`, globs expanded (in name order), each pattern matching.
pub fn parquet_files(data: &DataSection) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for p in &data.paths {
        out.extend(super::parquet_rows::expand_glob(p).map_err(|e| Error::input(format!("data.paths: {e}")))?);
    }
    Ok(out)
}

/// The columns a row needs under `data.format`.
fn columns(data: &DataSection) -> Vec<&str> {
    use super::config::DataFormat;
    match data.format {
        DataFormat::Text => vec![data.field.as_str()],
        DataFormat::Chat => vec![data.messages_field.as_str()],
        DataFormat::PromptCompletion => vec![data.prompt_field.as_str(), data.completion_field.as_str()],
    }
}

fn read_parquet(
    path: &Path,
    data: &DataSection,
    r: RowFn,
    docs: &mut dyn FnMut(String) -> Result<()>,
    bad: &mut BadLines,
) -> Result<()> {
    let strict = data.strict;
    // The sink's own errors (a stop, a strict failure) leave the reader through this slot, so
    // they keep their kind instead of becoming the reader's strings.
    let mut failed: Option<Error> = None;
    let res = super::parquet_rows::for_each_row(path, &columns(data), &mut |i, row| {
        let outcome = match r(&row) {
            Ok(doc) => docs(doc),
            Err(e) => bad.push(strict, format!("{}: row {}: {e}", path.display(), i + 1)),
        };
        outcome.map_err(|e| {
            failed = Some(e);
            String::new()
        })
    });
    match (failed, res) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(Error::input(e)),
        (None, Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_and_text_sources_report_bad_lines_with_file_and_line() {
        let dir = std::env::temp_dir().join(format!("distill-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("c.jsonl");
        let mut bytes = b"{\"text\": \"first doc\"}\n{broken\n{\"other\": 1}\n".to_vec();
        bytes.extend_from_slice(b"{\"text\": \"\xff\xfe\"}\n{\"text\": \"second doc\"}\n");
        std::fs::write(&j, bytes).unwrap();
        let t = dir.join("c.txt");
        std::fs::write(&t, "para one\nstill one\n\n\npara two\n").unwrap();
        let mut d = DataSection { source: SourceKind::Jsonl, paths: vec![j.clone()], ..Default::default() };
        let tk = crate::data::config::TokenizerSection::default();
        let load = |d: &DataSection, seed| load(&DataJob::new(d, &tk, seed));
        let (docs, bad) = load(&d, 0).unwrap();
        assert_eq!(docs, vec!["first doc", "second doc"]);
        assert_eq!(bad.count, 3);
        assert!(
            bad.examples[0].ends_with("c.jsonl:2: invalid JSON: key must be a string at line 1 column 2"),
            "{:?}",
            bad.examples
        );
        assert!(bad.examples[1].contains("c.jsonl:3: no string field `text`"));
        assert!(bad.examples[2].contains("c.jsonl:4: invalid UTF-8"));
        d.strict = true;
        let err = load(&d, 0).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("c.jsonl:2: invalid JSON"));
        let d = DataSection { source: SourceKind::Text, paths: vec![t], ..Default::default() };
        let (docs, bad) = load(&d, 0).unwrap();
        assert_eq!(docs, vec!["para one\nstill one", "para two"]);
        assert_eq!(bad.count, 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
