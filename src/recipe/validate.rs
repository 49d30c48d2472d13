//! The semantic rules of a recipe, one function per section, run once at load. A rule names
//! the key it is about; `Recipe::validate` adds where that key is set (line:column, `--set`
//! or default), so the rules themselves never see the file.
//!
//! The first broken rule is the one reported, so `check` runs the sections in a fixed order
//! (the order of the single function these rules were split out of).

// `!(x > 0.0)` is how these rules say "positive, and not NaN": a NaN fails every comparison,
// which `x <= 0.0` would let through.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::locate::locate;
use super::{
    CacheSection, CheckpointSection, CurriculumSection, DataFormat, DataSection, DistillSection, EvalSection,
    FilterSection, LogitsSource, OptimSection, Packing, Recipe, RowOrder, RunSection, Schedule, SourceKind,
    SyntheticFormat, TeacherDtype, TeacherKind, TeacherSection, TokenizerKind, TokenizerSection,
};
use crate::error::{Error, Result};
use crate::model::config::ModelShape;
use crate::teacher::codec::TailMode;
use crate::train::freeze::Freeze;

/// A broken rule: the dotted key it is about and what is wrong with its value.
struct Broken {
    key: String,
    msg: String,
}

type Rule = std::result::Result<(), Broken>;

fn fail(key: impl Into<String>, msg: impl Into<String>) -> Rule {
    Err(Broken { key: key.into(), msg: msg.into() })
}

/// `p` names a regular file: "does not exist" only when nothing is there; a directory, FIFO
/// or device is called what it is.
fn existing_file(key: &str, p: &std::path::Path) -> Rule {
    if !p.exists() {
        return fail(key, format!("file {} does not exist", p.display()));
    }
    crate::error::regular_file(p).map(|_| ()).or_else(|e| fail(key, e.to_string()))
}

impl Recipe {
    /// Every semantic rule; a failed one names the key and where it is set.
    pub(super) fn validate(&self, file: &str, text: &str, ov: &[String]) -> Result<()> {
        check(self).map_err(|b| {
            let loc = locate(file, text, ov, &b.key);
            Error::input(format!("{loc}: key `{}`: {}", b.key, b.msg))
        })
    }
}

fn check(r: &Recipe) -> Rule {
    run(&r.run)?;
    data(&r.data)?;
    packing(r)?;
    filter(&r.data.filter, r.teacher.kind)?;
    tokenizer(&r.tokenizer)?;
    teacher_source(r)?;
    if r.teacher.kind == TeacherKind::Pretrain {
        shape("teacher", &r.teacher.shape(), r.data.seq_len)?;
    }
    shape("student", &r.student.shape(), r.data.seq_len)?;
    student_kinds(r)?;
    student_start(r)?;
    hidden(r)?;
    on_policy(r)?;
    if let Err((key, msg)) = r.synth.check() {
        return fail(format!("synth.{key}"), msg);
    }
    distill_loss(&r.distill)?;
    optim("optim", &r.optim)?;
    optim("teacher.optim", &r.teacher.optim)?;
    teacher_dtype(&r.teacher)?;
    precision(r)?;
    distill_chunks_and_schedules(r)?;
    curriculum(&r.curriculum)?;
    qat(r)?;
    exports(r)?;
    cache(&r.cache)?;
    checkpoint(&r.checkpoint)?;
    eval(&r.eval)
}

/// QAT quantizes every block linear in blocks of the scheme's size along its inputs (ggml's
/// 32, or int4-g<N>'s N): the student's widths must tile them (attention's output projection
/// reads d_model inputs, SwiGLU's down projection d_ff, Mamba-2's a multiple of d_model).
fn qat(r: &Recipe) -> Rule {
    let q = &r.qat;
    if let Some(bits) = q.bits
        && bits != q.scheme.bits()
    {
        return fail("qat.bits", format!("{bits} bits, but scheme {} has {}", q.scheme, q.scheme.bits()));
    }
    if !r.qat.enabled {
        return Ok(());
    }
    let s = r.student.shape();
    let block = q.scheme.block();
    for (key, width) in [("student.model.d_model", s.d_model), ("student.model.d_ff", s.d_ff)] {
        if !width.is_multiple_of(block) {
            return fail(
                key,
                format!(
                    "[qat] scheme {} quantizes blocks of {block} inputs; expected a multiple of {block}, got {width}",
                    q.scheme
                ),
            );
        }
    }
    Ok(())
}

/// Formats the student's architecture cannot be written in are refused now, not after
/// training: GGUF needs an exact llama.cpp architecture, `hf` a transformers one (a hybrid
/// student's `hf` export is ours, DistillHybrid, which is allowed).
fn exports(r: &Recipe) -> Rule {
    use crate::export::ExportFormat as F;
    let s = r.student.shape();
    if let (Some(why), Some(f)) = (s.export_gap(), r.export.formats.first()) {
        let name = serde_json::to_value(f).expect("a unit variant");
        return fail(
            "export.formats",
            format!(
                "{}: cannot export this student: {why}; set export.formats = []",
                name.as_str().unwrap_or_default()
            ),
        );
    }
    for f in &r.export.formats {
        let refused = match f {
            F::GgufF16 | F::GgufQ8_0 | F::GgufQ4_0 => crate::export::gguf_model::architecture(&s).err(),
            F::F32 if !s.layer_pattern.contains('M') => crate::export::native::hf_architecture(&s).err(),
            F::Int8 | F::Int4 if s.moe.is_some() => crate::export::native::hf_architecture(&s).err(),
            _ => None,
        };
        if let Some(e) = refused {
            let name = serde_json::to_value(f).expect("a unit variant");
            return fail("export.formats", format!("{}: {e}", name.as_str().unwrap_or_default()));
        }
    }
    Ok(())
}

fn run(r: &RunSection) -> Rule {
    if r.name.is_empty() || r.name.contains(['/', '\\']) || r.name.starts_with('.') {
        return fail("run.name", format!("expected a plain directory name, got {:?}", r.name));
    }
    let b = r.backend;
    if !b.compiled_in() {
        return fail(
            "run.backend",
            format!("backend {b:?} is not compiled into this binary; rebuild with `--features {}`", b.cargo_feature()),
        );
    }
    if r.checkpoint_every == 0 {
        return fail("run.checkpoint_every", "expected a positive number of blocks, got 0");
    }
    Ok(())
}

fn data(d: &DataSection) -> Rule {
    if d.seq_len < 8 {
        return fail("data.seq_len", format!("expected at least 8 tokens, got {}", d.seq_len));
    }
    if d.streaming && d.synthetic_noise > 0.0 {
        return fail("data.synthetic_noise", "needs the in-memory path: set data.streaming = false");
    }
    if d.streaming && (d.filter.teacher_ppl_min.is_some() || d.filter.teacher_ppl_max.is_some()) {
        return fail(
            "data.filter.teacher_ppl_max",
            "the teacher-perplexity filter is not available with data.streaming = true yet",
        );
    }
    if !(0.0..=4.0).contains(&d.synthetic_noise) {
        return fail("data.synthetic_noise", format!("expected a share in [0, 4], got {}", d.synthetic_noise));
    }
    if !(d.valid_fraction > 0.0 && d.valid_fraction < 0.5) {
        return fail("data.valid_fraction", format!("expected a value in (0, 0.5), got {}", d.valid_fraction));
    }
    match d.source {
        SourceKind::Synthetic if d.synthetic_docs < 20 => {
            return fail("data.synthetic_docs", format!("expected at least 20 documents, got {}", d.synthetic_docs));
        }
        SourceKind::Text | SourceKind::Jsonl | SourceKind::Parquet if d.paths.is_empty() => {
            return fail("data.paths", "expected at least one input file for this source");
        }
        SourceKind::Text if d.format != DataFormat::Text => {
            return fail(
                "data.format",
                "plain text files hold text; chat and prompt/completion rows come from jsonl or parquet",
            );
        }
        _ => {}
    }
    for p in &d.paths {
        // Parquet and JSONL paths may be globs over shards, expanded (and checked) when read.
        let glob = matches!(d.source, SourceKind::Parquet | SourceKind::Jsonl)
            && p.file_name().is_some_and(|n| n.to_string_lossy().contains(['*', '?']));
        if !glob {
            existing_file("data.paths", p)?;
        }
    }
    for (key, v) in [
        ("data.field", &d.field),
        ("data.messages_field", &d.messages_field),
        ("data.prompt_field", &d.prompt_field),
        ("data.completion_field", &d.completion_field),
    ] {
        if v.is_empty() {
            return fail(key, "expected a field name, got an empty string");
        }
    }
    if let Some(p) = &d.chat_template {
        existing_file("data.chat_template", p)?;
    }
    if d.synthetic_format == SyntheticFormat::Chat && d.source != SourceKind::Synthetic {
        return fail("data.synthetic_format", "applies to data.source = \"synthetic\" only");
    }
    Ok(())
}

/// Packed documents restart attention at each document; a Mamba-2 scan would carry its state
/// across them.
fn packing(r: &Recipe) -> Rule {
    if r.data.packing != Packing::Documents {
        return Ok(());
    }
    let pretrained = r.teacher.kind == TeacherKind::Pretrain && r.teacher.shape().layer_pattern.contains('M');
    if r.student.shape().layer_pattern.contains('M') || pretrained {
        return fail(
            "data.packing",
            "\"documents\" is for attention-only models (a Mamba-2 scan would carry state across documents); use \"doc_per_row\"",
        );
    }
    Ok(())
}

fn filter(f: &FilterSection, teacher: TeacherKind) -> Rule {
    if f.min_chars > f.max_chars {
        return fail(
            "data.filter.min_chars",
            format!("min_chars ({}) is larger than max_chars ({})", f.min_chars, f.max_chars),
        );
    }
    for (name, v) in [
        ("max_symbol_ratio", f.max_symbol_ratio),
        ("min_alpha_ratio", f.min_alpha_ratio),
        ("max_upper_ratio", f.max_upper_ratio),
        ("max_repeated_ngram_share", f.max_repeated_ngram_share),
        ("minhash_threshold", f.minhash_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return fail(format!("data.filter.{name}"), format!("expected a value in [0, 1], got {v}"));
        }
    }
    if f.ngram_words == 0 {
        return fail("data.filter.ngram_words", "expected a positive integer, got 0");
    }
    if f.minhash_bands == 0 || !f.minhash_perms.is_multiple_of(f.minhash_bands) {
        return fail(
            "data.filter.minhash_bands",
            format!("expected a positive divisor of minhash_perms ({}), got {}", f.minhash_perms, f.minhash_bands),
        );
    }
    if f.teacher_ppl_min.is_some() || f.teacher_ppl_max.is_some() {
        let (lo, hi) = (f.teacher_ppl_min.unwrap_or(1.0), f.teacher_ppl_max.unwrap_or(f64::INFINITY));
        if !(lo >= 1.0 && lo < hi) {
            return fail(
                "data.filter.teacher_ppl_min",
                format!("expected 1 <= teacher_ppl_min < teacher_ppl_max, got {lo} and {hi}"),
            );
        }
        if teacher == TeacherKind::Pretrain {
            return fail(
                "data.filter.teacher_ppl_min",
                "the teacher-perplexity filter needs a teacher before the data: teacher.kind = \"hf\" or \"checkpoint\"",
            );
        }
    }
    Ok(())
}

fn tokenizer(t: &TokenizerSection) -> Rule {
    match t.kind {
        TokenizerKind::Train if !(300..=1 << 20).contains(&t.vocab_size) => fail(
            "tokenizer.vocab_size",
            format!(
                "expected at least 300 (256 byte symbols + specials + merges) and at most 1048576, got {}",
                t.vocab_size
            ),
        ),
        _ if t.kind != TokenizerKind::Train && !t.special_tokens.is_empty() => {
            fail("tokenizer.special_tokens", "applies to a trained tokenizer (tokenizer.kind = \"train\") only")
        }
        TokenizerKind::File => match &t.path {
            None => fail("tokenizer.path", "required when tokenizer.kind = \"file\""),
            Some(p) => existing_file("tokenizer.path", p),
        },
        _ => Ok(()),
    }
}

/// Where the teacher comes from, and the vocabulary that implies.
fn teacher_source(r: &Recipe) -> Rule {
    let tok = r.tokenizer.kind;
    if r.teacher.kind == TeacherKind::Pretrain {
        if tok == TokenizerKind::Teacher {
            return fail(
                "tokenizer.kind",
                "\"teacher\" needs teacher.kind = \"hf\", \"gguf\" or \"checkpoint\"; a pretrained teacher uses the trained tokenizer",
            );
        }
        return Ok(());
    }
    let (kind, marker) = match r.teacher.kind {
        TeacherKind::Hf => ("hf", "config.json"),
        TeacherKind::Gguf => ("gguf", ""),
        _ => ("checkpoint", "model.json"),
    };
    let offline = r.teacher.logits == LogitsSource::Cache && r.cache_dir().join("cache.json").is_file();
    match &r.teacher.path {
        None => return fail("teacher.path", format!("required when teacher.kind = \"{kind}\"")),
        // A cached teacher is offline: its cache stands in for a folder or file that is gone.
        Some(p) if marker.is_empty() && !p.is_file() && !offline => {
            return fail("teacher.path", format!("{} is not a GGUF file", p.display()));
        }
        Some(p) if !marker.is_empty() && !p.join(marker).is_file() && !offline => {
            return fail(
                "teacher.path",
                format!("{} is not a teacher directory for kind \"{kind}\" (no {marker} in it)", p.display()),
            );
        }
        _ => {}
    }
    if tok == TokenizerKind::Train {
        return fail(
            "tokenizer.kind",
            "this teacher brings its own vocabulary: set tokenizer.kind = \"teacher\" (or \"file\" with the same tokenizer.json)",
        );
    }
    Ok(())
}

/// Where the student starts and what of it stays fixed (`student.init`, `path`, `freeze`,
/// `[student.prune]`).
fn student_start(r: &Recipe) -> Rule {
    let s = &r.student;
    if s.path.is_some() && !s.init.from_files() {
        return fail("student.path", "is read only with student.init = \"hf\" or \"gguf\"");
    }
    if let Some(p) = &s.prune
        && p.calibration_rows == 0
    {
        return fail("student.prune.calibration_rows", "expected at least 1 row");
    }
    let f = match Freeze::parse(&s.freeze) {
        Ok(f) => f,
        Err(e) => return fail("student.freeze", e),
    };
    if f.is_empty() {
        return Ok(());
    }
    let shape = s.shape();
    if s.init.is_random() {
        return fail(
            "student.freeze",
            "keeps loaded weights fixed; a random student (student.init = \"random\") has none",
        );
    }
    if f.layers_end() > shape.n_layers {
        return fail(
            "student.freeze",
            format!(
                "names layers up to {}, but the student has {} (0..{})",
                f.layers_end() - 1,
                shape.n_layers,
                shape.n_layers
            ),
        );
    }
    if f.lm_head && shape.tie_embeddings {
        return fail("student.freeze", "\"lm_head\": the student's head is its embedding (tied): freeze \"embedding\"");
    }
    Ok(())
}

/// `[distill.hidden]` compares the student's block outputs with the live teacher's.
fn hidden(r: &Recipe) -> Rule {
    let h = &r.distill.hidden;
    if !(h.weight >= 0.0 && h.weight.is_finite()) {
        return fail("distill.hidden.weight", format!("expected a finite weight >= 0, got {}", h.weight));
    }
    if h.weight > 0.0 && r.teacher.logits == LogitsSource::Cache {
        return fail(
            "distill.hidden.weight",
            "the hidden-state loss needs the teacher's block outputs, which a teacher cache does not hold: set teacher.logits = \"online\" (or the weight to 0)",
        );
    }
    Ok(())
}

/// `[distill.on_policy]`: its ranges, and a run it can work in (prompts to continue, a live
/// teacher to grade what the student writes).
fn on_policy(r: &Recipe) -> Rule {
    let o = &r.distill.on_policy;
    let key = |k: &str| format!("distill.on_policy.{k}");
    if !(0.0..=1.0).contains(&o.fraction) {
        return fail(key("fraction"), format!("expected a share of batches in [0, 1], got {}", o.fraction));
    }
    if !(o.temperature >= 0.0 && o.temperature.is_finite()) {
        return fail(
            key("temperature"),
            format!("expected a finite temperature >= 0 (0 = greedy), got {}", o.temperature),
        );
    }
    if !(o.top_p > 0.0 && o.top_p <= 1.0) {
        return fail(key("top_p"), format!("expected a value in (0, 1], got {}", o.top_p));
    }
    if !(0.0..=1.0).contains(&o.jsd_beta) {
        return fail(key("jsd_beta"), format!("expected 0 <= jsd_beta <= 1, got {}", o.jsd_beta));
    }
    if o.fraction == 0.0 {
        return Ok(());
    }
    if o.max_new_tokens == 0 || o.max_new_tokens > r.data.seq_len {
        return fail(
            key("max_new_tokens"),
            format!("expected 1 to data.seq_len ({}) tokens, got {}", r.data.seq_len, o.max_new_tokens),
        );
    }
    if r.teacher.logits == LogitsSource::Cache {
        return fail(
            key("fraction"),
            "on-policy batches are text the student writes during training, which a teacher cache (the teacher's logits of the dataset's text, computed beforehand) cannot hold: set teacher.logits = \"online\"",
        );
    }
    if r.data.row_format() == crate::data::config::DataFormat::Text {
        return fail(
            key("fraction"),
            "on-policy distillation continues prompts, and plain text has none: use data.format = \"chat\" or \"prompt_completion\" (the prompt is what precedes a row's first loss token)",
        );
    }
    if r.data.packing != crate::data::config::Packing::DocPerRow {
        return fail(
            key("fraction"),
            "on-policy distillation rewrites each row after its prompt, so a row must hold one conversation: set data.packing = \"doc_per_row\"",
        );
    }
    Ok(())
}

/// The resolved shape of `who` ("teacher" or "student"): the model's own rules
/// ([`ModelShape::check`]), and it must hold `seq_len` tokens.
fn shape(who: &str, s: &ModelShape, seq_len: usize) -> Rule {
    if let Err((key, msg)) = s.check() {
        return fail(format!("{who}.model.{key}"), msg);
    }
    if seq_len > s.max_seq_len {
        return fail(
            "data.seq_len",
            format!("seq_len ({}) exceeds the {who}'s context {who}.model.max_seq_len ({})", seq_len, s.max_seq_len),
        );
    }
    Ok(())
}

/// Linformer and Performer layers are for students (a teacher's come from files that have
/// none); what they and MoE layers cannot do yet is refused before anything runs.
fn student_kinds(r: &Recipe) -> Rule {
    if r.teacher.kind == TeacherKind::Pretrain && r.teacher.shape().approx_attention().is_some() {
        return fail("teacher.model.layer_pattern", "L (Linformer) and P (Performer) layers are for students only");
    }
    let s = r.student.shape();
    if s.approx_attention().is_some() {
        if r.data.packing == Packing::Documents {
            return fail(
                "data.packing",
                "\"documents\" needs attention that restarts at each document; Linformer and Performer layers mix \
                 whole chunks (use \"doc_per_row\")",
            );
        }
        if r.distill.on_policy.fraction > 0.0 {
            return fail(
                "distill.on_policy.fraction",
                "on-policy batches are generated from left-padded prompts, which Linformer and Performer layers \
                 would mix into their chunks; use a student of A and M layers",
            );
        }
    }
    if let Some(m) = &s.moe {
        if !r.student.init.is_random() && m.d_ff_expert != s.d_ff {
            return fail(
                "student.model.moe.d_ff_expert",
                format!(
                    "upcycling copies the dense FFN into each expert: expected the student's d_ff ({}), got {}",
                    s.d_ff, m.d_ff_expert
                ),
            );
        }
        if r.run.activation_checkpointing != crate::train::recompute::Checkpointing::None {
            return fail(
                "run.activation_checkpointing",
                "not yet for MoE students: the recomputed blocks would not carry the router's load-balancing loss",
            );
        }
        let block = r.qat.scheme.block();
        if r.qat.enabled && !m.d_ff_expert.is_multiple_of(block) {
            return fail(
                "student.model.moe.d_ff_expert",
                format!(
                    "[qat] scheme {} quantizes blocks of {block} inputs; expected a multiple of {block}, got {}",
                    r.qat.scheme, m.d_ff_expert
                ),
            );
        }
    }
    Ok(())
}

/// The loss weights and temperature.
fn distill_loss(d: &DistillSection) -> Rule {
    if !(0.0..=1.0).contains(&d.alpha) {
        return fail("distill.alpha", format!("expected 0 <= alpha <= 1, got {}", d.alpha));
    }
    for (name, v) in [("jsd_beta", d.jsd_beta), ("skew_lambda", d.skew_lambda)] {
        if !(0.0..=1.0).contains(&v) {
            return fail(format!("distill.{name}"), format!("expected a value in [0, 1], got {v}"));
        }
    }
    if !(d.temperature > 0.0 && d.temperature.is_finite()) {
        return fail("distill.temperature", format!("expected tau > 0, got {}", d.temperature));
    }
    Ok(())
}

/// The student's `[optim]` or the teacher's `[teacher.optim]` (`prefix`).
fn optim(prefix: &str, o: &OptimSection) -> Rule {
    let k = |name: &str| format!("{prefix}.{name}");
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return fail(k("lr"), format!("expected a learning rate > 0, got {}", o.lr));
    }
    if !(o.min_lr >= 0.0 && o.min_lr <= o.lr) {
        return fail(k("min_lr"), format!("expected 0 <= min_lr <= lr ({}), got {}", o.lr, o.min_lr));
    }
    for (name, v) in [("beta1", o.beta1), ("beta2", o.beta2)] {
        if !(0.0..1.0).contains(&v) {
            return fail(k(name), format!("expected a value in [0, 1), got {v}"));
        }
    }
    if !(o.eps > 0.0) {
        return fail(k("eps"), format!("expected > 0, got {}", o.eps));
    }
    if !(o.weight_decay >= 0.0) || !(o.grad_clip >= 0.0) {
        let name = if o.weight_decay >= 0.0 { "grad_clip" } else { "weight_decay" };
        return fail(k(name), "expected a value >= 0");
    }
    for (name, v) in [("batch_size", o.batch_size), ("grad_accum", o.grad_accum), ("steps", o.steps)] {
        if v == 0 {
            return fail(k(name), "expected a positive integer, got 0");
        }
    }
    if o.warmup_steps > o.steps {
        return fail(k("warmup_steps"), format!("warmup_steps ({}) exceeds steps ({})", o.warmup_steps, o.steps));
    }
    Ok(())
}

fn teacher_dtype(t: &TeacherSection) -> Rule {
    if t.dtype != TeacherDtype::F32 && t.kind == TeacherKind::Pretrain && t.shape().layer_pattern.contains('M') {
        return fail(
            "teacher.dtype",
            "half precision is supported for attention-only teachers; this teacher has Mamba-2 layers",
        );
    }
    Ok(())
}

/// bf16 training, like a half-precision teacher, is for attention layers: the Mamba-2 scan's
/// cumulative sums lose too much in bf16.
fn precision(r: &Recipe) -> Rule {
    if r.run.precision.is_f32() {
        return Ok(());
    }
    let pretrained = r.teacher.kind == TeacherKind::Pretrain && r.teacher.shape().layer_pattern.contains('M');
    if r.student.shape().layer_pattern.contains('M') || pretrained {
        let who = if pretrained { "the pretrained teacher" } else { "the student" };
        return fail(
            "run.precision",
            format!("bf16 training is supported for attention-only models; {who} has Mamba-2 layers (use f32)"),
        );
    }
    Ok(())
}

/// The loss's chunking and the alpha / temperature schedules (the latter constrained by the
/// teacher cache's tail mode).
fn distill_chunks_and_schedules(r: &Recipe) -> Rule {
    let d = &r.distill;
    if d.chunk_tokens == Some(0) {
        return fail("distill.chunk_tokens", "expected a positive integer, got 0");
    }
    if let Some(a) = d.alpha_end
        && !(0.0..=1.0).contains(&a)
    {
        return fail("distill.alpha_end", format!("expected 0 <= alpha_end <= 1, got {a}"));
    }
    if let Some(t) = d.temperature_end {
        if !(t > 0.0 && t.is_finite()) {
            return fail("distill.temperature_end", format!("expected tau > 0, got {t}"));
        }
        if r.teacher.logits == LogitsSource::Cache && r.cache.tail == TailMode::Other && t != d.temperature {
            return fail(
                "distill.temperature_end",
                "a temperature schedule with the teacher cache needs cache.tail = \"renormalize\" (the cache stores the tail mass at fixed temperatures only)",
            );
        }
    }
    Ok(())
}

fn curriculum(c: &CurriculumSection) -> Rule {
    if !(0.0..=1.0).contains(&c.start) {
        return fail("curriculum.start", format!("expected a competence in [0, 1], got {}", c.start));
    }
    if !(c.ramp > 0.0 && c.ramp <= 1.0) {
        return fail("curriculum.ramp", format!("expected a fraction of training in (0, 1], got {}", c.ramp));
    }
    if !(0.0..=1.0).contains(&c.min_weight) {
        return fail("curriculum.min_weight", format!("expected a weight in [0, 1], got {}", c.min_weight));
    }
    if c.stages == 0 {
        return fail("curriculum.stages", "expected a positive integer, got 0");
    }
    if c.schedule == Schedule::SelfPaced && c.order == RowOrder::EasyToHard {
        return fail(
            "curriculum.order",
            "easy_to_hard needs a stored difficulty score; self_paced ranks by the student's loss",
        );
    }
    Ok(())
}

fn cache(c: &CacheSection) -> Rule {
    if c.k == 0 || c.rows_per_shard == 0 {
        let name = if c.k == 0 { "k" } else { "rows_per_shard" };
        return fail(format!("cache.{name}"), "expected a positive integer, got 0");
    }
    if c.k > 1 << 20 {
        return fail("cache.k", format!("expected at most 1048576 (a whole vocabulary), got {}", c.k));
    }
    Ok(())
}

fn checkpoint(c: &CheckpointSection) -> Rule {
    if c.every_steps == 0 || c.keep_last == 0 {
        let name = if c.every_steps == 0 { "every_steps" } else { "keep_last" };
        return fail(format!("checkpoint.{name}"), "expected a positive integer, got 0");
    }
    Ok(())
}

fn eval(e: &EvalSection) -> Rule {
    if e.every_steps == 0 || e.batches == 0 {
        let name = if e.every_steps == 0 { "every_steps" } else { "batches" };
        return fail(format!("eval.{name}"), "expected a positive integer, got 0");
    }
    Ok(())
}
