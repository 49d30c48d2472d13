use std::path::PathBuf;

use super::*;
use crate::run_dir::{RunDir, RunStatus};
use crate::train::metrics::MetricsRow;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("distill-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn metrics_rows() -> String {
    (1..=6)
        .map(|s| {
            let row = MetricsRow {
                phase: "student".into(),
                step: s,
                loss: 4.0 - 0.3 * s as f64,
                ce: 4.5 - 0.3 * s as f64,
                kl: Some(1.0 / s as f64),
                lr: 1e-3,
                grad_norm: 2.0,
                tok_per_s: 900.0,
                eval_loss: (s % 3 == 0).then_some(3.5 - 0.1 * s as f64),
                ..Default::default()
            };
            serde_json::to_string(&row).unwrap() + "\n"
        })
        .collect()
}

/// The page holds every section, the run's files' figures, escaped text, inline SVG charts and
/// nothing fetched from elsewhere; with no eval or speculative file it says which command fills them.
#[test]
fn report_page_is_self_contained_with_every_section() {
    let d = scratch("page");
    let rd = RunDir(&d);
    std::fs::write(rd.resolved_recipe(), "[run]\nname = \"x\" # <script>alert(1)</script>\n[optim]\nsteps = 10\n")
        .unwrap();
    std::fs::write(rd.metrics(), metrics_rows()).unwrap();
    std::fs::create_dir_all(rd.data()).unwrap();
    std::fs::write(
        rd.filter_report(),
        r#"{"filter":{"docs_in":10,"docs_kept":7,"chars_in":500,"chars_kept":350,"rules":[{"rule":"min_chars","removed_docs":3,"removed_chars":150,"removed_tokens":40}]}}"#,
    )
    .unwrap();
    let bare = html::render(&d);
    assert!(bare.contains("not measured"), "the speculative section says how to fill it");
    std::fs::write(
        rd.eval_report(),
        r#"{"models":[{"model":"teacher","loss":2.5,"ppl":12.18,"kl_teacher":0.0,"kl_reverse":0.0,"agreement":1.0,"ece":0.05},
        {"model":"student f32","loss":3.1,"ppl":22.2,"kl_teacher":0.61234,"kl_reverse":0.7,"agreement":0.5432,"ece":0.04}],"policy":null,"speculative":null}"#,
    )
    .unwrap();
    std::fs::write(
        rd.speculative_report(),
        r#"{"prompts":3,"draft_len":4,"temperature":0.0,"acceptance":0.625,"tokens_per_call":2.5,"expected_tokens_per_call":2.3,"speculative_tok_s":50.0,"teacher_tok_s":25.0,"speedup":2.0}"#,
    )
    .unwrap();
    let page = html::render(&d);
    for (id, heading) in html::SECTIONS {
        assert!(page.contains(&format!("<section id=\"{id}\"><h2>{heading}</h2>")), "section {id}");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>alert"), "escaped");
    assert!(page.contains("status: <b>stopped</b>, student step 6 of 10"), "{}", &page[..600]);
    assert!(page.contains("<td>min_chars</td><td>3</td><td>150</td><td>40</td>"));
    assert!(page.contains("<td>0.6123</td>") && page.contains("<td>0.5432</td>"), "the eval table");
    assert!(page.contains("<td>speedup</td><td>2.00</td>"));
    assert!(page.matches("<svg").count() >= 5, "loss parts, held-out, lr, tokens/s, grad norm");
    for fetch in ["<script", "<link", "src=", "url("] {
        assert!(!page.contains(fetch), "the page fetches nothing: found {fetch}");
    }
}

/// Running (a live LOCK), failed (a dead LOCK, or FAILED), finished (a summary), stopped.
#[test]
fn run_status_from_its_files() {
    let d = scratch("status");
    let rd = RunDir(&d);
    assert_eq!(rd.status(), RunStatus::Stopped);
    std::fs::write(rd.failure(), "teacher: missing tensor `x`\n").unwrap();
    assert_eq!(rd.status(), RunStatus::Failed("teacher: missing tensor `x`".into()));
    std::fs::write(rd.summary(), "{}").unwrap();
    assert_eq!(rd.status(), RunStatus::Finished);
    std::fs::write(d.join("LOCK"), format!("{}\n", std::process::id())).unwrap();
    assert_eq!(rd.status(), RunStatus::Running(std::process::id()));
    // No process has pid u32::MAX - 1 (above Linux's pid_max).
    std::fs::write(d.join("LOCK"), format!("{}\n", u32::MAX - 1)).unwrap();
    assert!(matches!(rd.status(), RunStatus::Failed(w) if w.contains("killed?")));
}

/// `distill runs`: a folder's run directories with their step of the planned steps, best
/// held-out loss and exports; other folders are not runs.
#[test]
fn runs_lists_each_run() {
    let root = scratch("runs");
    let a = root.join("a");
    std::fs::create_dir_all(a.join("export")).unwrap();
    std::fs::write(RunDir(&a).resolved_recipe(), "[optim]\nsteps = 10\n").unwrap();
    std::fs::write(RunDir(&a).metrics(), metrics_rows()).unwrap();
    std::fs::write(a.join("export").join("model.gguf"), vec![0u8; 1234]).unwrap();
    std::fs::create_dir_all(root.join("not-a-run")).unwrap();
    let rows = runs::list(&root);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.name.as_str(), r.status.as_str(), r.step, r.steps), ("a", "stopped", Some(6), Some(10)));
    // Held-out losses at steps 3 and 6: 3.2 and 2.9.
    assert!((r.best_held_out.unwrap() - 2.9).abs() < 1e-12);
    assert_eq!(r.exports, vec![("model.gguf".to_string(), 1234)]);
}
