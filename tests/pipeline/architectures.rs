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
        ("student.model.linformer.chunk=1000000000000", "linformer.chunk"),
        ("student.model.performer.features=0", "performer.features"),
    ] {
        std::fs::write(dir.join("r.toml"), moe_recipe(&dir, "r", 4)).unwrap();
        let e = Recipe::load(&dir.join("r.toml"), &[set.to_string()]).unwrap_err().to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A student pruned from the teacher and upcycled: its first weights hold a mixture in each
/// layer whose experts (without noise) are one FFN, the pruned one; it then trains.
#[test]
fn pruned_student_is_upcycled_into_experts() {
    let dir = tmp("upcycle");
    let text = tiny_recipe(&dir, "u", 6)
        .replace("[student.model]", "[student]\ninit = \"prune\"\n\n[student.model]")
        .replace("n_heads = 4\nn_kv_heads = 1", "n_heads = 2\nn_kv_heads = 1")
        .replace("tie_embeddings = true", "tie_embeddings = false\n\n[student.model.moe]\nexperts = 3\nactive = 2\nd_ff_expert = 64\nupcycle_noise = 0.0")
        .replace("[checkpoint]", "[export]\nformats = []\n\n[checkpoint]");
    let stop = AtomicBool::new(false);
    let mut log = Vec::new();
    pipeline::run(&load(&text, &dir), &opts(&stop, None), &mut |l| log.push(l)).unwrap();
    assert!(log.iter().any(|l| l.contains("upcycled to 3 experts")), "{log:?}");
    let (init, _) = distill::model::store::load(&dir.join("u/student/init"), &Device::flex()).unwrap();
    let Some(m) = &init.blocks[0].moe else { panic!("a dense FFN after upcycling") };
    let w = |i: usize| m.experts[i].w_down.weight.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(w(0), w(2));
    assert!(rows(&dir.join("u"), "student").iter().all(|r| r["router_aux"].as_f64().is_some()));
    std::fs::remove_dir_all(&dir).ok();
}
