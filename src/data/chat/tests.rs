//! Chat templates and assistant masks against transformers' `apply_chat_template` (fixtures
//! written by `scripts/make_chat_template_fixture.py`: the rendered text, its ids, and the
//! assistant mask transformers computes from `{% generation %}` tags, an independent method
//! from ours), plus the malformed rows and hostile templates.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::data::config::{DataFormat, DataSection, LossOn};
use crate::data::tokenizer::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat").join(name)
}

fn template(name: &str, bos: Option<&str>, eos: Option<&str>) -> ChatTemplate {
    let src = std::fs::read_to_string(fixture(&format!("templates/{name}.jinja"))).unwrap();
    let specials = Specials { bos: bos.map(str::to_string), eos: eos.map(str::to_string) };
    ChatTemplate::new(&src, specials, name).unwrap()
}

fn msgs(v: &Value) -> Vec<Message> {
    messages(v, "messages").unwrap()
}

fn chat_section() -> DataSection {
    DataSection { format: DataFormat::Chat, source: crate::data::config::SourceKind::Jsonl, ..Default::default() }
}

#[test]
fn templates_render_ids_and_assistant_masks_as_transformers_does() {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap();
    let cases = file["cases"].as_array().unwrap();
    let tok = Tokenizer::load(&fixture("tokenizer.json")).unwrap();
    let data = chat_section();
    let (mut rendered, mut masked, mut raised) = (std::collections::BTreeMap::new(), 0, 0);
    for (i, c) in cases.iter().enumerate() {
        let name = c["template"].as_str().unwrap();
        let t = template(name, c["bos_token"].as_str(), c["eos_token"].as_str());
        let m = msgs(&c["messages"]);
        let gen_prompt = c["add_generation_prompt"].as_bool().unwrap_or(false);
        if let Some(err) = c.get("error").and_then(|e| e.as_str()) {
            let got = t.render(&m, gen_prompt).unwrap_err();
            assert!(got.contains(err), "case {i} ({name}): expected the error {err:?}, got {got:?}");
            raised += 1;
            continue;
        }
        let text = t.render(&m, gen_prompt).unwrap();
        assert_eq!(text, c["text"].as_str().unwrap(), "case {i} ({name}): rendered text");
        *rendered.entry(name.to_string()).or_insert(0) += 1;
        let want_ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let want_mask: Vec<bool> =
            c["assistant_mask"].as_array().unwrap().iter().map(|x| x.as_u64() == Some(1)).collect();
        // The mask of the conversation as training sees it: rendered without a generation
        // prompt, assistant spans located by our prefix method.
        if gen_prompt || !want_mask.contains(&true) {
            assert_eq!(tok.encode(&text).unwrap(), want_ids, "case {i} ({name}): ids");
            continue;
        }
        let r = Renderer { data: &data, template: Some(&t), plain_bos: None, plain_eos: "<|endoftext|>".into() };
        let doc = r.document(&json!({ "messages": c["messages"] })).unwrap();
        let (ids, mask) = tok.encode_marked(&doc).unwrap();
        assert_eq!(ids, want_ids, "case {i} ({name}): ids");
        assert_eq!(mask, want_mask, "case {i} ({name}): assistant mask");
        masked += 1;
    }
    for name in ["chatml", "llama3", "qwen2"] {
        assert!(rendered.get(name).copied().unwrap_or(0) >= 20, "{name}: {rendered:?}");
    }
    assert!(masked >= 45 && raised >= 2, "{masked} masks, {raised} raised");
}

#[test]
fn named_templates_in_a_tokenizer_config() {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_config.json")).unwrap()).unwrap();
    let chatml = std::fs::read_to_string(fixture("templates/chatml.jinja")).unwrap();
    let qwen2 = std::fs::read_to_string(fixture("templates/qwen2.jinja")).unwrap();
    assert_eq!(template::from_tokenizer_config(&cfg, None).unwrap().unwrap(), chatml);
    assert_eq!(template::from_tokenizer_config(&cfg, Some("tool_use")).unwrap().unwrap(), qwen2);
    let e = template::from_tokenizer_config(&cfg, Some("nope")).unwrap_err();
    assert!(e.contains("no template named \"nope\"") && e.contains("tool_use"), "{e}");
    let single = json!({"chat_template": "{{ x }}", "eos_token": {"content": "</s>"}});
    assert_eq!(template::from_tokenizer_config(&single, None).unwrap().as_deref(), Some("{{ x }}"));
    assert_eq!(template::special_of(&single, "eos_token").as_deref(), Some("</s>"));
    assert_eq!(template::from_tokenizer_config(&json!({}), None).unwrap(), None);
    assert!(template::from_tokenizer_config(&json!({"chat_template": 3}), None).is_err());
}

/// The token mask against its definition, by hand: a token is in the loss when its bytes
/// overlap a span.
#[test]
fn marks_round_trip_and_token_masks_follow_offsets() {
    let text = "ab<|x|>cdé f";
    let spans = vec![2..7, 9..11];
    let marked = mark(text, &spans);
    assert_eq!(marked.chars().filter(|&c| c == START || c == END).count(), 4);
    assert_eq!(unmark(&marked), (text.to_string(), spans.clone()));
    // Tokens: "ab" [0,2), "<|x|>" [2,7), "cd" [7,9), the first byte of é [9,10), its second
    // [9,11) as byte-level BPE reports it, " f" [11,13), and an empty one at 13.
    let offsets = [(0, 2), (2, 7), (7, 9), (9, 10), (9, 11), (11, 13), (13, 13)];
    assert_eq!(token_mask(&offsets, &spans), vec![false, true, false, true, true, false, false]);
    assert_eq!(token_mask(&[(1, 3), (6, 8)], &[2..7]), vec![true, true], "partial overlaps count");
}

#[test]
fn malformed_rows_are_named_and_hostile_templates_fail_cleanly() {
    let t = template("chatml", Some("<|im_start|>"), Some("<|im_end|>"));
    let data = chat_section();
    let r = Renderer { data: &data, template: Some(&t), plain_bos: None, plain_eos: "<|endoftext|>".into() };
    for (row, want) in [
        (json!({"text": "x"}), "no field `messages`"),
        (json!({"messages": "hi"}), "not a list of messages"),
        (json!({"messages": []}), "empty list"),
        (json!({"messages": [1]}), "`messages`[0] is not an object"),
        (json!({"messages": [{"content": "x"}]}), "`messages`[0] has no string `role`"),
        (json!({"messages": [{"role": "user", "content": null}]}), "`messages`[0] (user) has no string `content`"),
        (json!({"messages": [{"role": "user", "content": "hi"}]}), "nothing to train on"),
        (
            json!({"messages": [{"role": "user", "content": "a\u{e000}b"}, {"role": "assistant", "content": "c"}]}),
            "U+E000",
        ),
    ] {
        let e = r.document(&row).unwrap_err();
        assert!(e.contains(want), "{row}: expected {want:?} in {e:?}");
    }
    // Templates are untrusted: a syntax error names where the template came from, a runaway
    // loop runs out of fuel, an unknown filter and raise_exception give their messages.
    let e = ChatTemplate::new("{% for m in messages %}", Specials::default(), "evil.jinja").unwrap_err();
    assert!(e.starts_with("evil.jinja: not a valid chat template"), "{e}");
    let spin = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
    let started = std::time::Instant::now();
    let e = ChatTemplate::new(spin, Specials::default(), "spin.jinja").unwrap().render(&[], false).unwrap_err();
    assert!(e.contains("fuel"), "{e}");
    assert!(started.elapsed().as_secs() < 20, "fuel bounds the work");
    // An unknown filter is found when the template runs (as in Jinja2).
    let e = ChatTemplate::new("{{ 'a' | nosuchfilter }}", Specials::default(), "f.jinja").unwrap().render(&[], false);
    let e = e.unwrap_err();
    assert!(e.starts_with("chat template (f.jinja)") && e.contains("nosuchfilter"), "{e}");
    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", Specials::default(), "r").unwrap();
    assert_eq!(t.render(&[], false).unwrap_err(), "chat template (r): roles must alternate");
    // Python's string methods, as transformers' templates use them.
    let py = "{{ messages[0].content.strip().startswith('hi') }}|{{ ' A b '.lower().split() | join(',') }}|{{ 'x'.upper() }}";
    let m = [Message { role: "user".into(), content: "  hi there ".into(), extra: Default::default() }];
    let got = ChatTemplate::new(py, Specials::default(), "py").unwrap().render(&m, false).unwrap();
    // As Jinja2 prints them: Python's `True`.
    assert_eq!(got, "True|a,b|X");
}

/// Plain and conversational prompt/completion rows: the completion (and the EOS that ends a
/// plain one) is the span.
#[test]
fn prompt_completion_spans_cover_the_completion() {
    let t = template("chatml", Some("<|im_start|>"), Some("<|im_end|>"));
    let data = DataSection { format: DataFormat::PromptCompletion, ..chat_section() };
    let r = Renderer { data: &data, template: Some(&t), plain_bos: Some("<s>".into()), plain_eos: "</s>".into() };
    let doc = r.document(&json!({"prompt": "2 + 2 =", "completion": " 4"})).unwrap();
    assert_eq!(unmark(&doc), ("<s>2 + 2 = 4</s>".to_string(), vec![10..16]));
    let row = json!({
        "prompt": [{"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "Hello!"}],
    });
    let (text, spans) = unmark(&r.document(&row).unwrap());
    assert_eq!(&text[spans[0].clone()], "Hello!<|im_end|>\n", "{text:?}");
    assert!(text[..spans[0].start].ends_with("<|im_start|>assistant\n"));
    let e = r.document(&json!({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]})).unwrap_err();
    assert!(e.contains("both be text or both be messages"), "{e}");
    let all = DataSection { loss_on: LossOn::All, ..data.clone() };
    let r = Renderer { data: &all, ..r };
    let (text, spans) = unmark(&r.document(&json!({"prompt": "a", "completion": "b"})).unwrap());
    assert_eq!(spans, vec![0..text.len()]);
}
