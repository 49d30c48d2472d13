//! The training loop's own tests: one step's loss and gradient, NaN handling, mixed
//! precision, accumulation and weight-decay groups.
use super::*;
use crate::recipe::PartialShape;
use crate::train::config::{CheckpointSection, EvalSection, OptimSection};

/// The loss and gradient norm of one step over rows with `batch * accum` = 4 (with
/// `decay` = weight_decay), no teacher.
fn first_step(name: &str, batch: usize, accum: usize, train: &Packed) -> MetricsRow {
    first_step_in(name, batch, accum, train, Precision::F32).0
}

/// A student job without a teacher (hard labels), f32, stopping on NaN: what the tests
/// below vary from.
fn test_job<'a>(
    dir: &std::path::Path,
    model: DecoderConfig,
    optim: &'a OptimSection,
    train: &'a Packed,
    checkpoint: &'a CheckpointSection,
    stop: &'a AtomicBool,
) -> TrainJob<'a> {
    TrainJob {
        phase: Phase::Student,
        dir: dir.to_path_buf(),
        metrics: dir.join("metrics.jsonl"),
        model,
        precision: Precision::F32,
        optim,
        teacher: TeacherSource::None,
        kd: KdConfig {
            alpha: 1.0,
            temperature: 1.0,
            chunk_tokens: 64,
            divergence: crate::kd_loss::Divergence::ForwardKl,
        },
        alpha_end: None,
        temperature_end: None,
        curriculum: None,
        train,
        valid: train,
        seed: 3,
        checkpoint,
        eval: &EVAL,
        stop,
        stop_after: None,
        on_nan: OnNan::Stop,
        nan_retries: 3,
        fault_nan_at: None,
        quiet: true,
        qat: None,
        init: None,
        freeze: Default::default(),
        hidden: None,
        on_policy: None,
        recompute: None,
        checkpoints: true,
    }
}

fn tiny_model() -> DecoderConfig {
    let shape =
        PartialShape { d_model: Some(16), n_layers: Some(1), n_heads: Some(2), d_ff: Some(32), ..Default::default() };
    DecoderConfig { vocab_size: 16, shape: shape.to_shape().unwrap() }
}

static EVAL: std::sync::LazyLock<EvalSection> = std::sync::LazyLock::new(EvalSection::default);

/// The metrics row of the first step and the model after it.
fn first_step_in(
    name: &str,
    batch: usize,
    accum: usize,
    train: &Packed,
    precision: Precision,
) -> (MetricsRow, Decoder) {
    let dir = std::env::temp_dir().join(format!("distill-accum-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let model = tiny_model();
    let optim = OptimSection { batch_size: batch, grad_accum: accum, steps: 1, warmup_steps: 0, ..Default::default() };
    let stop = AtomicBool::new(false);
    let checkpoint = CheckpointSection::default();
    let mut job = test_job(&dir, model, &optim, train, &checkpoint, &stop);
    job.precision = precision;
    let model = super::train(&job, &Device::flex()).unwrap();
    let row = super::super::metrics::read(&dir.join("metrics.jsonl")).remove(0);
    std::fs::remove_dir_all(&dir).ok();
    (row, model)
}

/// Six steps with checkpoints every two, and a NaN loss injected at `fault`: the metrics
/// rows, the final state.json, and the outcome.
fn faulty(name: &str, on_nan: OnNan, fault: Option<usize>) -> (Vec<MetricsRow>, Option<TrainState>, Result<Decoder>) {
    let dir = std::env::temp_dir().join(format!("distill-nan-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let model = tiny_model();
    let optim = OptimSection { batch_size: 2, steps: 6, warmup_steps: 0, ..Default::default() };
    let train = ragged_rows();
    let stop = AtomicBool::new(false);
    let checkpoint = CheckpointSection { every_steps: 2, keep_last: 2 };
    let mut job = test_job(&dir, model, &optim, &train, &checkpoint, &stop);
    (job.on_nan, job.fault_nan_at) = (on_nan, fault);
    let out = super::train(&job, &Device::flex());
    let rows = super::super::metrics::read(&dir.join("metrics.jsonl"));
    let state = crate::util::read_json(&dir.join("checkpoints/step-00000006/state.json")).ok();
    std::fs::remove_dir_all(&dir).ok();
    (rows, state, out)
}

/// `on_nan`: stop names the step and the switch; skip drops that batch and goes on (the
/// later steps see other batches); rollback returns to the step-4 checkpoint and retrains
/// steps 5 and 6 with half the learning rate, one metrics row per step.
#[test]
fn on_nan_stops_skips_or_rolls_back() {
    let (clean, ..) = faulty("clean", OnNan::Stop, None);
    let (rows, _, out) = faulty("stop", OnNan::Stop, Some(5));
    let e = out.err().unwrap().to_string();
    assert!(e.contains("loss became NaN at step 5") && e.contains("run.on_nan"), "{e}");
    assert_eq!(rows.len(), 4, "nothing logged or applied for the NaN step");
    let (rows, state, out) = faulty("skip", OnNan::Skip, Some(5));
    out.unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        rows[..4].iter().map(|r| r.loss).collect::<Vec<_>>(),
        clean[..4].iter().map(|r| r.loss).collect::<Vec<_>>()
    );
    assert_ne!(rows[4].loss, clean[4].loss, "step 5 trains on the batch after the skipped one");
    assert_eq!(state.unwrap().skipped_in_a_row, 0);
    let (rows, state, out) = faulty("rollback", OnNan::Rollback, Some(5));
    out.unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(rows[4].lr, clean[4].lr * 0.5);
    assert_eq!(rows[3].loss, clean[3].loss);
    assert_eq!(rows[4].loss, clean[4].loss, "the checkpoint's model on the same batch again");
    let state = state.unwrap();
    assert_eq!((state.lr_scale, state.rollbacks), (0.5, 1));
}

/// Rows of one-document sequences of very different lengths (EOS = 0, rows of 16).
fn ragged_rows() -> Packed {
    let lens = [15usize, 2, 11, 3, 14, 2, 9, 4];
    let toks: Vec<u32> = lens
        .iter()
        .enumerate()
        .flat_map(|(d, &n)| (0..n).map(move |j| 1 + ((d * 5 + j * 3) % 15) as u32).chain([0]))
        .collect();
    Packed::per_document(toks, 16, 0)
}

/// bf16 mixed precision computes in bf16 (the loss differs from f32's in its low bits),
/// agrees with f32 within bf16's resolution, and trains f32 master weights: the gradients
/// reach them through the casts and the updated weights are f32.
#[test]
fn bf16_mixed_precision_tracks_f32_with_f32_master_weights() {
    let train = ragged_rows();
    let (f, mf) = first_step_in("f32", 4, 1, &train, Precision::F32);
    let (h, mh) = first_step_in("bf16", 4, 1, &train, Precision::Bf16);
    assert_ne!(f.loss, h.loss, "bf16 must actually compute in bf16");
    assert!((f.loss - h.loss).abs() < 2e-2 * f.loss, "loss bf16 {} vs f32 {}", h.loss, f.loss);
    assert!(
        (f.grad_norm - h.grad_norm).abs() < 5e-2 * f.grad_norm,
        "grad norm bf16 {} vs f32 {}",
        h.grad_norm,
        f.grad_norm
    );
    let w = |m: &Decoder| m.embed.weight.val();
    assert_eq!(w(&mh).dtype(), burn::tensor::DType::F32, "master weights stay f32");
    // Adam's first step moves every weight with a gradient by about lr: the two agree.
    let diff = (w(&mh) - w(&mf)).abs().mean().into_scalar::<f32>();
    assert!(diff < 0.2 * OptimSection::default().lr as f32, "mean |bf16 - f32| after one step: {diff}");
}

/// Gradient accumulation weights micro-batches by their real tokens: 2 x 2 and 4 x 1
/// micro-batches over the same 4 one-document rows of very different lengths give the loss
/// and gradient norm of one batch of those rows.
#[test]
fn accumulation_weights_micro_batches_by_tokens() {
    // Padding varies from row to row.
    let train = ragged_rows();
    let whole = first_step("whole", 4, 1, &train);
    for (batch, accum) in [(2, 2), (1, 4)] {
        let acc = first_step(&format!("{batch}x{accum}"), batch, accum, &train);
        for (key, a, b) in [("loss", whole.loss, acc.loss), ("grad_norm", whole.grad_norm, acc.grad_norm)] {
            assert!((a - b).abs() < 1e-5 * a.abs(), "{batch} x {accum}: {key} {b} vs one batch {a}");
        }
    }
}

/// Weight decay leaves norms, biases, embeddings and Mamba's A_log, D and dt_bias alone and
/// scales every matrix by exactly (1 - lr wd); `no_decay = []` decays everything.
#[test]
fn weight_decay_skips_the_usual_groups() {
    use crate::model::config::MambaShape;
    use crate::train::decay::NoDecay;
    let dev = Device::flex();
    let cfg = DecoderConfig {
        vocab_size: 24,
        shape: PartialShape {
            d_model: Some(16),
            n_layers: Some(2),
            n_heads: Some(2),
            d_ff: Some(32),
            layer_pattern: Some("AM".into()),
            qkv_bias: Some(true),
            tie_embeddings: Some(false),
            mamba: Some(MambaShape { d_state: 4, head_dim: 8, chunk_size: 4, ..Default::default() }),
            ..Default::default()
        }
        .to_shape()
        .unwrap(),
    };
    let m = cfg.init(5, &dev.clone().autodiff());
    let flat = |m: &Decoder| -> Vec<(String, Vec<f32>)> {
        struct Collect(Vec<Vec<f32>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                // Still a leaf of the autodiff graph: it gets a gradient in the next step.
                assert!(p.val().is_require_grad(), "a decayed parameter must stay trainable");
                self.0.push(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        crate::train::decay::groups(m).into_iter().map(|(p, _)| p).zip(c.0).collect()
    };
    let before = flat(&m);
    let all = [NoDecay::Norm, NoDecay::Bias, NoDecay::Embedding, NoDecay::Ssm];
    // A step without gradients only decays.
    let decay_only = |m: Decoder, no_decay: &[NoDecay]| {
        let args = StepArgs { lr: 1e-3, grad_scale: 1.0, decay: 0.5, no_decay };
        AdamW::new(&OptimSection::default()).step(m, GradientsParams::new(), args)
    };
    let after = flat(&decay_only(m.clone(), &all));
    let everything = flat(&decay_only(m, &[]));
    let exempt = |p: &str| {
        let leaf = p.rsplit('.').next().unwrap();
        p.starts_with("embed.") || ["gamma", "norm_w", "bias", "conv_b", "a_log", "d", "dt_bias"].contains(&leaf)
    };
    let mut seen = [0usize; 2];
    for (((path, b), (_, a)), (_, e)) in before.iter().zip(&after).zip(&everything) {
        let want = if exempt(path) { 1.0 } else { 0.5 };
        seen[exempt(path) as usize] += 1;
        assert!(b.iter().zip(a).all(|(x, y)| *y == *x * want), "{path}: expected a factor {want}");
        assert!(b.iter().zip(e).all(|(x, y)| *y == *x * 0.5), "{path}: no_decay = [] decays it");
    }
    assert!(
        seen[0] >= 8 && seen[1] >= 10,
        "matrices and exempt parameters both seen: {seen:?} in {:?}",
        before.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
}

/// Activation checkpointing trains as the plain backward: two steps of a tied three-block
/// model give the same losses and gradient norms, every block or every second one
/// recomputed, in f32 and under bf16 mixed precision (whose casts are graph nodes that a
/// backward consumes: the tied embedding is read through a graph of its own), with QAT.
#[test]
fn recomputed_blocks_train_like_the_plain_backward() {
    let train = ragged_rows();
    let run = |name: &str, precision: Precision, qat: bool, recompute: Option<usize>| {
        let dir = std::env::temp_dir().join(format!("distill-recompute-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let shape = PartialShape {
            d_model: Some(32),
            n_layers: Some(3),
            n_heads: Some(2),
            d_ff: Some(64),
            tie_embeddings: Some(true),
            ..Default::default()
        };
        let model = DecoderConfig { vocab_size: 16, shape: shape.to_shape().unwrap() };
        let optim = OptimSection { batch_size: 2, grad_accum: 2, steps: 2, warmup_steps: 0, ..Default::default() };
        let (stop, checkpoint) = (AtomicBool::new(false), CheckpointSection::default());
        let mut job = test_job(&dir, model, &optim, &train, &checkpoint, &stop);
        (job.precision, job.recompute) = (precision, recompute);
        if qat {
            let q = crate::quant::fake_quant::QatSection {
                enabled: true,
                scheme: crate::quant::fake_quant::Scheme::Q8_0,
                embeddings: true,
                ..Default::default()
            };
            job.qat = Some((q.plan(), 0));
        }
        super::train(&job, &Device::flex()).unwrap();
        let rows = super::super::metrics::read(&dir.join("metrics.jsonl"));
        std::fs::remove_dir_all(&dir).ok();
        rows.iter().flat_map(|r| [r.loss, r.grad_norm]).collect::<Vec<f64>>()
    };
    for (precision, qat, tol) in
        [(Precision::F32, false, 1e-5), (Precision::Bf16, false, 1e-2), (Precision::F32, true, 1e-5)]
    {
        let want = run("plain", precision, qat, None);
        for every in [1, 2] {
            let got = run(&format!("every{every}"), precision, qat, Some(every));
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() <= tol * a.abs(), "{precision:?} qat {qat} every {every}: {got:?} vs {want:?}");
            }
        }
    }
}
