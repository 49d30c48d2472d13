//! Chat and prompt/completion data through whole runs: the assistant-only loss, packed
//! documents, the teacher cache of loss positions, Parquet against JSONL, and the data/
//! samples.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use distill::data::tokens::{DOC_START, LOSS};
use distill::pipeline;

use super::{load, opts, rows, tiny_recipe, tmp};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The tiny recipe on `data/<file>` as `format`, SmolLM2's template, trained tokenizer with the
/// template's specials.
fn chat_recipe(dir: &Path, name: &str, source: &str, file: &str, format: &str, extra: &str) -> String {
    let data = format!(
        "[data]\nsource = \"{source}\"\nformat = \"{format}\"\npaths = [\"{}\"]\nchat_template = \"{}\"\n{extra}",
        repo(file).display(),
        repo("recipes/templates/smollm2.jinja").display()
    );
    tiny_recipe(dir, name, 8)
        .replace("[data]\nsynthetic_docs = 400\n", &data)
        .replace("[tokenizer]\n", "[tokenizer]\nspecial_tokens = [\"<|im_start|>\", \"<|im_end|>\"]\n")
}

/// Per document of a prepared split (documents start at DOC_START), its loss tokens decoded.
fn loss_text(tokens: &[u32], flags: &[u8], tok: &distill::data::tokenizer::Tokenizer) -> Vec<String> {
    let mut out = Vec::new();
    let (mut start, n) = (0, tokens.len());
    while start < n {
        let mut end = start + 1;
        while end < n && flags[end] & DOC_START == 0 {
            end += 1;
        }
        let ids: Vec<u32> = (start..end).filter(|&i| flags[i] & LOSS != 0).map(|i| tokens[i]).collect();
        out.push(tok.decode(&ids).unwrap());
        start = end;
    }
    out
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn chat_data_trains_on_assistant_tokens_with_packed_documents_and_a_cache() {
    let dir = tmp("chat");
    let stop = AtomicBool::new(false);
    let text = chat_recipe(&dir, "c", "jsonl", "data/chat.jsonl", "chat", "packing = \"documents\"\n")
        + "\n[teacher]\nlogits = \"cache\"\n\n[cache]\nk = 8\n";
    pipeline::run(&load(&text, &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let run = dir.join("c");
    let p = distill::data::load_prepared(&run).unwrap();
    let flags = p.train_flags.as_ref().unwrap();
    let m = &p.meta;
    // System and user turns and the template's headers are out of the loss.
    assert!(m.train_loss_tokens > m.train_tokens / 5 && m.train_loss_tokens < m.train_tokens * 3 / 4, "{m:?}");
    // Each document's loss tokens decode to its assistant turns, each closed by <|im_end|>.
    let rows_json: Vec<serde_json::Value> = std::fs::read_to_string(repo("data/chat.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let answers: std::collections::HashSet<String> = rows_json
        .iter()
        .map(|r| {
            r["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "assistant")
                .map(|m| format!("{}<|im_end|>\n", m["content"].as_str().unwrap()))
                .collect::<String>()
        })
        .collect();
    let said = loss_text(&p.train, flags, &p.tokenizer);
    for (i, s) in said.iter().enumerate() {
        assert!(answers.contains(s), "document {i}: loss tokens decode to {s:?}");
    }
    let docs = said.len();
    assert_eq!(docs, m.train_docs);
    // Each step logs the count its loss is over, fewer than the tokens it reads.
    let student = rows(&run, "student");
    assert_eq!(student.len(), 8);
    for r in &student {
        let (lt, step_tokens) = (r["loss_tokens"].as_u64().unwrap(), 8 * 32);
        assert!(lt > 0 && lt < step_tokens, "{r}");
    }
    // The cache holds the loss positions only.
    let manifest: serde_json::Value = serde_json::from_slice(&read(&run.join("teacher_cache/cache.json"))).unwrap();
    let (kept, skipped) = (manifest["tokens"].as_u64().unwrap(), manifest["skipped"].as_u64().unwrap());
    assert!(skipped > kept / 2 && kept > 0, "{kept} kept, {skipped} skipped");
    std::fs::remove_dir_all(&dir).ok();
}

/// The same conversations from Parquet and from JSONL prepare to the same bytes.
#[test]
fn parquet_and_jsonl_chat_samples_prepare_identically() {
    let dir = tmp("chat-parquet");
    let mut prepared = Vec::new();
    for (name, source, file) in [("j", "jsonl", "data/chat.jsonl"), ("p", "parquet", "data/chat.parquet")] {
        let r = load(&chat_recipe(&dir, name, source, file, "chat", ""), &dir);
        pipeline::prepare_data_to_disk(&r, &dir.join(name), &mut |_| {}).unwrap();
        prepared.push(dir.join(name));
    }
    for f in ["data/train.u32", "data/train.flags", "data/valid.u32", "data/valid.flags", "tokenizer.json"] {
        assert!(read(&prepared[0].join(f)) == read(&prepared[1].join(f)), "{f} differs");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Plain prompt/completion rows: the loss is on each completion and the EOS after it, prepared
/// in memory and streaming.
#[test]
fn prompt_completion_loss_is_on_the_completion() {
    let dir = tmp("pc");
    let completions: std::collections::HashSet<String> = std::fs::read_to_string(repo("data/prompt_completion.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["completion"].as_str().unwrap().to_string())
        .collect();
    for (name, extra) in [("pc", ""), ("pc-stream", "streaming = true\n")] {
        let text = chat_recipe(&dir, name, "jsonl", "data/prompt_completion.jsonl", "prompt_completion", extra);
        let r = load(&text, &dir);
        pipeline::prepare_data_to_disk(&r, &dir.join(name), &mut |_| {}).unwrap();
        let p = distill::data::load_prepared(&dir.join(name)).unwrap();
        for (tokens, flags, docs) in [
            (&p.train, p.train_flags.as_ref().unwrap(), p.meta.train_docs),
            (&p.valid, p.valid_flags.as_ref().unwrap(), p.meta.valid_docs),
        ] {
            let said = loss_text(tokens, flags, &p.tokenizer);
            for s in &said {
                let c = s.strip_suffix("<|endoftext|>").unwrap_or_else(|| panic!("{name}: {s:?} ends with EOS"));
                assert!(completions.contains(c), "{name}: {s:?}");
            }
            assert_eq!(said.len(), docs, "{name}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
