//! `distill report <run>`: one self-contained HTML page of a run, from the files the run and
//! `distill eval` / `distill speculative` left in it. Every section is there whether or not its
//! file is (it then says which command fills it), so a page is complete at any point of a run.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::escape;
use crate::run_dir::RunDir;
use crate::train::metrics;

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
pre{background:#f7f7f7;padding:.8em;overflow:auto;max-height:28em;font-size:.85em}\
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots svg{width:540px;height:auto;border:1px solid #eee}\
.note{color:#666}";

/// The page's sections, in order: (id, heading). A check of the rendered page looks for each.
pub const SECTIONS: [(&str, &str); 6] = [
    ("recipe", "Recipe"),
    ("data", "Data filter"),
    ("plots", "Training curves"),
    ("eval", "Evaluation"),
    ("exports", "Exports"),
    ("speculative", "Speculative decoding"),
];

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        // A figure the evaluation could not make (a cached teacher's KLs).
        None if v.is_null() => "-".into(),
        None => escape(&v.to_string()),
    }
}

/// A table with `head` and `rows` (cells already HTML).
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    head.iter().for_each(|h| {
        let _ = write!(s, "<th>{}</th>", escape(h));
    });
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        r.iter().for_each(|c| {
            let _ = write!(s, "<td>{c}</td>");
        });
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn note(s: &str) -> String {
    format!("<p class=\"note\">{}</p>", escape(s))
}

/// The page of the run in `dir`.
pub fn render(dir: &Path) -> String {
    let rd = RunDir(dir);
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let summary = read_json(&rd.summary());
    let eval = read_json(&rd.eval_report());
    let row = super::runs::row(dir);
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>distill run <code>{}</code></h1><p>status: <b>{}</b>{}{}{}</p>",
        escape(&name),
        row.status,
        row.step.map(|s| format!(", {} step {s}", row.phase.clone().unwrap_or_default())).unwrap_or_default(),
        row.steps.map(|n| format!(" of {n}")).unwrap_or_default(),
        row.detail.map(|d| format!(": {}", escape(&d))).unwrap_or_default(),
    );
    for (id, heading) in SECTIONS {
        let inner = match id {
            "recipe" => match std::fs::read_to_string(rd.resolved_recipe()) {
                Ok(t) => format!("<pre>{}</pre>", escape(&t)),
                Err(_) => note("no recipe.resolved.toml"),
            },
            "data" => data_section(&rd),
            "plots" => {
                let teacher = summary.as_ref().and_then(|s| s["teacher"]["loss"].as_f64());
                let charts = super::plots::charts(&metrics::read(&rd.metrics()), teacher);
                match charts.is_empty() {
                    true => note("no metrics yet"),
                    false => format!(
                        "<div class=\"plots\">{}</div>",
                        charts.iter().map(|c| c.svg.as_str()).collect::<Vec<_>>().join("")
                    ),
                }
            }
            "eval" => eval_section(eval.as_ref(), summary.as_ref()),
            "exports" => exports_section(&row.exports, eval.as_ref()),
            _ => speculative_section(read_json(&rd.speculative_report()).or_else(|| {
                let s = eval.as_ref()?["speculative"].clone();
                (!s.is_null()).then_some(s)
            })),
        };
        let _ = write!(body, "<section id=\"{id}\"><h2>{heading}</h2>{inner}</section>");
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>distill: {}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape(&name)
    )
}

fn data_section(rd: &RunDir) -> String {
    let Some(r) = read_json(&rd.filter_report()) else {
        return note("the data has not been prepared yet");
    };
    let f = &r["filter"];
    let mut rows: Vec<Vec<String>> = f["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|x| {
                    vec![
                        escape(x["rule"].as_str().unwrap_or("?")),
                        num(&x["removed_docs"], 0),
                        num(&x["removed_chars"], 0),
                        num(&x["removed_tokens"], 0),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    rows.push(vec![
        "<b>kept</b>".into(),
        format!("{} of {}", num(&f["docs_kept"], 0), num(&f["docs_in"], 0)),
        format!("{} of {}", num(&f["chars_kept"], 0), num(&f["chars_in"], 0)),
        String::new(),
    ]);
    table(&["rule", "documents removed", "characters removed", "tokens removed"], &rows)
}

fn eval_section(eval: Option<&Value>, summary: Option<&Value>) -> String {
    if let Some(models) = eval.and_then(|e| e["models"].as_array()) {
        let rows: Vec<Vec<String>> = models
            .iter()
            .map(|m| {
                vec![
                    escape(m["model"].as_str().unwrap_or("?")),
                    num(&m["loss"], 4),
                    num(&m["ppl"], 3),
                    num(&m["kl_teacher"], 4),
                    num(&m["kl_reverse"], 4),
                    num(&m["agreement"], 4),
                    num(&m["ece"], 4),
                ]
            })
            .collect();
        return table(
            &["model", "loss", "perplexity", "KL(teacher||model)", "KL(model||teacher)", "top-1 agreement", "ECE"],
            &rows,
        ) + &note("from `distill eval` (eval.json), on the held-out split's loss tokens");
    }
    match summary {
        Some(s) => {
            let rows: Vec<Vec<String>> = ["teacher", "student", "student_int8"]
                .iter()
                .filter(|k| !s[**k].is_null())
                .map(|k| vec![escape(k), num(&s[*k]["loss"], 4), num(&s[*k]["ppl"], 3), num(&s[*k]["tokens"], 0)])
                .collect();
            table(&["model", "held-out loss", "perplexity", "tokens"], &rows)
                + &note("from the run's summary; `distill eval <run>` adds agreement, both KLs and calibration")
        }
        None => note("the run has not finished; `distill eval <run> --checkpoint latest` evaluates it so far"),
    }
}

fn exports_section(files: &[(String, u64)], eval: Option<&Value>) -> String {
    if files.is_empty() {
        return note("no exports yet (`distill export <run> --format ...`)");
    }
    let models = eval.and_then(|e| e["models"].as_array()).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|(f, bytes)| {
            // An export evaluated with `distill eval --exported` is named by its path: the
            // file, or for safetensors the export folder holding it.
            let m = models.iter().find(|m| {
                m["model"].as_str().is_some_and(|n| {
                    let n = n.trim_end_matches('/');
                    n.ends_with(f.as_str()) || (f.ends_with(".safetensors") && n.ends_with("export"))
                })
            });
            vec![
                escape(f),
                format!("{:.1}", *bytes as f64 / 1e6),
                m.map_or("-".into(), |m| num(&m["ppl"], 3)),
                m.map_or("-".into(), |m| num(&m["kl_teacher"], 4)),
            ]
        })
        .collect();
    table(&["file", "MB", "perplexity", "KL(teacher||export)"], &rows)
        + &note("quality from `distill eval <run> --exported <file>`")
}

fn speculative_section(s: Option<Value>) -> String {
    let Some(s) = s else {
        return note("not measured: `distill speculative <run> --prompts <file>`");
    };
    let rows = vec![
        vec!["prompts".into(), num(&s["prompts"], 0)],
        vec!["draft tokens per call".into(), num(&s["draft_len"], 0)],
        vec!["temperature".into(), num(&s["temperature"], 2)],
        vec!["acceptance (accepted / drafted)".into(), num(&s["acceptance"], 3)],
        vec!["tokens per teacher call".into(), num(&s["tokens_per_call"], 2)],
        vec!["expected at that acceptance, (1 - a^(k+1)) / (1 - a)".into(), num(&s["expected_tokens_per_call"], 2)],
        vec!["speculative tokens/s".into(), num(&s["speculative_tok_s"], 1)],
        vec!["teacher alone tokens/s".into(), num(&s["teacher_tok_s"], 1)],
        vec!["speedup".into(), num(&s["speedup"], 2)],
    ];
    table(&["", "value"], &rows)
}
