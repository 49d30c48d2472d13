//! The seeds' other student designs through a whole run: mixture-of-experts FFNs with
//! Linformer and Performer layers train, log the router's loss and loads, resume exactly, and
//! are refused where they cannot go.

use super::*;

/// `tiny_recipe` with a 3-layer student of a Linformer, a Performer (features redrawn every
/// 2 steps) and an attention layer, each with a 4-expert top-2 MoE FFN.
fn moe_recipe(dir: &Path, name: &str, steps: usize) -> String {
    tiny_recipe(dir, name, steps)
        .replace("n_layers = 1", "n_layers = 3\nlayer_pattern = \"LPA\"")
        .replace(
            "tie_embeddings = true",
            "tie_embeddings = true\n\n[student.model.linformer]\nchunk = 8\nrows = 2\n\n[student.model.performer]\nfeatures = 16\nredraw = 2\nchunk = 8\n\n[student.model.moe]\nexperts = 4\nactive = 2\nd_ff_expert = 32\nrouter_aux_loss = 0.05",
        )
        .replace("[checkpoint]", "[export]\nformats = []\n\n[checkpoint]")
}

#[test]
fn moe_linformer_performer_student_trains_logs_and_resumes() {
    let dir = tmp("moe");
    let stop = AtomicBool::new(false);
    pipeline::run(&load(&moe_recipe(&dir, "a", 6), &dir), &opts(&stop, None), &mut |_| {}).unwrap();
    let b = load(&moe_recipe(&dir, "b", 6), &dir);
    let e = pipeline::run(&b, &opts(&stop, Some((Phase::Student, 3))), &mut |_| {}).unwrap_err();
    assert!(matches!(e, distill::error::Error::Interrupted(_)), "{e}");
    pipeline::resume(&dir.join("b"), &opts(&stop, None), &mut |_| {}).unwrap();
    let (ra, rb) = (rows(&dir.join("a"), "student"), rows(&dir.join("b"), "student"));
    assert_eq!((ra.len(), rb.len()), (6, 6));
    for (x, y) in ra.iter().zip(&rb) {
        let aux = x["router_aux"].as_f64().unwrap();
        assert!(aux > 0.5 && aux < 4.0, "E sum f P is 1 when balanced: {aux}");
        let load = x["expert_load"].as_array().unwrap();
        assert_eq!(load.len(), 3, "one row of loads per MoE layer");
        for l in load {
            let sum: f64 = l.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{l}");
        }
        for key in ["loss", "ce", "router_aux", "expert_load", "grad_norm", "eval_loss"] {
            assert_eq!(x[key], y[key], "step {}: {key} after resume", x["step"]);
        }
    }
    // The final model generates through its caches (Linformer, Performer, MoE) what a full
    // pass scores: greedy continuation through `distill generate` exits 0.
    let (code, out, err) =
        distill_cmd(&["generate", dir.join("a").to_str().unwrap(), "--prompt", "the", "--max-tokens", "8"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    // An export: refused at load, naming why and the way on.
    let bad = moe_recipe(&dir, "c", 6).replace("formats = []", "formats = [\"int8\"]");
    std::fs::write(dir.join("c.toml"), bad).unwrap();
    let e = Recipe::load(&dir.join("c.toml"), &[]).unwrap_err().to_string();
    assert!(e.contains("export.formats") && e.contains("Linformer and Performer") && e.contains("formats = []"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Packed documents and activation checkpointing are refused for the layers they do not fit.
#[test]
fn linear_attention_and_moe_limits_are_refused_at_load() {
    let dir = tmp("moe-refuse");
    for (set, key) in [
        ("data.packing=\"documents\"", "data.packing"),
        ("run.activation_checkpointing=\"layers\"", "run.activation_checkpointing"),
        ("student.model.moe.active=5", "moe.active"),
        ("student.model.layer_pattern=\"AX\"", "layer_pattern"),
    ] {
        std::fs::write(dir.join("r.toml"), moe_recipe(&dir, "r", 4)).unwrap();
        let e = Recipe::load(&dir.join("r.toml"), &[set.to_string()]).unwrap_err().to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
