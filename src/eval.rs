//! Held-out evaluation: mean next-token cross-entropy over real (non-padded) tokens, and its
//! exponential, the perplexity.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor};

use crate::data::pack::{Batch, Packed};
use crate::error::{Error, Result};
use crate::kd_loss::{Divergence, KdConfig, kd_loss};
use crate::model::Decoder;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EvalResult {
    pub loss: f64,
    pub ppl: f64,
    pub tokens: usize,
}

/// Evaluate on the first `max_batches` batches of `data` in order (all of it when `None`).
/// `model` should be on a plain (non-autodiff) device.
pub fn evaluate(
    model: &Decoder,
    data: &Packed,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
) -> EvalResult {
    let never = AtomicBool::new(false);
    evaluate_until(model, data, batch_size, max_batches, device, &never).expect("never stopped")
}

/// [`evaluate`] over the whole split, stopping between batches once `stop` is set (SIGINT /
/// SIGTERM): a held-out split can take minutes, and an evaluation keeps no state, so a stop
/// loses only the pass, which `resume` runs again. `what` names the pass in the error.
pub fn evaluate_or_stop(
    model: &Decoder,
    data: &Packed,
    batch_size: usize,
    device: &Device,
    stop: &AtomicBool,
    what: &str,
) -> Result<EvalResult> {
    evaluate_until(model, data, batch_size, None, device, stop)
        .ok_or_else(|| Error::Interrupted(format!("stopped during {what} (everything finished is saved)")))
}

/// The evaluation loop; `None` once `stop` is set.
fn evaluate_until(
    model: &Decoder,
    data: &Packed,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
    stop: &AtomicBool,
) -> Option<EvalResult> {
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let mut sum = 0.0;
    let mut tokens = 0;
    for (i, chunk) in rows.chunks(batch_size).enumerate() {
        if max_batches.is_some_and(|m| i >= m) {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let batch = data.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let logits =
            model.forward_docs(batch.inputs.clone(), batch.docs.as_ref()).reshape([b * t, model.config.vocab_size]);
        sum += ce_sum(logits, &batch);
        tokens += batch.real_tokens;
    }
    Some(result(sum, tokens))
}

/// A batch's cross-entropy summed over its real tokens (the loss's mean, the way training
/// computes it, times their count).
fn ce_sum(logits: Tensor<2>, batch: &Batch) -> f64 {
    let cfg = KdConfig { alpha: 1.0, temperature: 1.0, chunk_tokens: 4096, divergence: Divergence::ForwardKl };
    let mean: f32 = kd_loss(logits, None, batch.targets.clone(), batch.mask.clone(), cfg).ce.into_scalar();
    mean as f64 * batch.real_tokens as f64
}

/// The loss and perplexity of a summed cross-entropy over `tokens`.
fn result(ce_sum: f64, tokens: usize) -> EvalResult {
    let loss = ce_sum / tokens.max(1) as f64;
    EvalResult { loss, ppl: loss.exp(), tokens }
}

/// Mean per-token KL(reference || model) over the real tokens of `data`, in nats: how far the
/// quantized model's next-token distributions moved from the reference's (llama.cpp's
/// `perplexity --kl-divergence` reports the same quantity against the f16 model). Figure by
/// figure, two forwards a batch: [`compare`] computes it for `distill eval`; this is its
/// reference in the tests.
#[cfg(test)]
pub fn kl_divergence(reference: &Decoder, model: &Decoder, data: &Packed, batch_size: usize, device: &Device) -> f64 {
    use burn::tensor::activation::log_softmax;
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let (mut sum, mut tokens) = (0.0f64, 0usize);
    for chunk in rows.chunks(batch_size) {
        let batch = data.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let v = model.config.vocab_size;
        let lp = log_softmax(reference.forward_docs(batch.inputs.clone(), batch.docs.as_ref()).reshape([b * t, v]), 1);
        let lq = log_softmax(model.forward_docs(batch.inputs, batch.docs.as_ref()).reshape([b * t, v]), 1);
        let per_row: burn::tensor::Tensor<1> = (lp.clone().exp() * (lp - lq)).sum_dim(1).reshape([b * t]);
        sum += (per_row * batch.mask).sum().into_scalar::<f32>() as f64;
        tokens += batch.real_tokens;
    }
    sum / tokens.max(1) as f64
}

/// A model's held-out figures in [`compare`]: its loss and perplexity, the KL of its
/// next-token distributions from the student's and from the teacher's and the teacher's from
/// its (nats per token), how often its most likely token is the teacher's, and its expected
/// calibration error.
#[derive(Debug, Clone, Copy)]
pub struct Compared {
    pub eval: EvalResult,
    /// KL(student || model).
    pub kl_student: f64,
    /// KL(teacher || model): forward KL, what distillation minimizes by default.
    pub kl_teacher: f64,
    /// KL(model || teacher): reverse KL, what on-policy distillation minimizes.
    pub kl_reverse: f64,
    /// The share of held-out tokens where the model's argmax is the teacher's.
    pub agreement: f64,
    /// Expected calibration error of the model's top-1 prediction against the held-out next
    /// token, over [`ECE_BINS`] equal-width confidence bins.
    pub ece: f64,
}

/// Confidence bins of the expected calibration error (Guo et al. 2017 use 15).
pub const ECE_BINS: usize = 15;

/// Tokens, confidence sums and correct counts per confidence bin: the parts of an ECE.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    count: [f64; ECE_BINS],
    confidence: [f64; ECE_BINS],
    correct: [f64; ECE_BINS],
}

impl Calibration {
    /// One token predicted with top-1 probability `confidence`, right or not.
    pub fn add(&mut self, confidence: f64, correct: bool) {
        let b = ((confidence * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        self.count[b] += 1.0;
        self.confidence[b] += confidence;
        self.correct[b] += correct as u8 as f64;
    }

    /// sum over bins of (tokens in the bin / all tokens) * |accuracy - mean confidence|.
    pub fn ece(&self) -> f64 {
        let n: f64 = self.count.iter().sum();
        (0..ECE_BINS).filter(|&b| self.count[b] > 0.0).map(|b| (self.correct[b] - self.confidence[b]).abs() / n).sum()
    }
}

/// [`evaluate`] and [`kl_divergence`] from the student and from the teacher, for the teacher,
/// the student and each of `variants` (quantized students, exported files), in one pass over
/// `data`: per batch the teacher's and the student's forward once and each variant's once
/// (figure by figure it was five forwards per variant). Rows: teacher, student, then
/// `variants` in order; the same sums in the same order as the separate functions.
pub fn compare(
    teacher: &Decoder,
    student: &Decoder,
    variants: &[&Decoder],
    data: &Packed,
    batch_size: usize,
    device: &Device,
) -> Vec<Compared> {
    use burn::tensor::activation::log_softmax;
    let n = variants.len() + 2;
    let (mut ce, mut kl_s, mut kl_t, mut kl_r, mut agree) =
        (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    let mut cal = vec![Calibration::default(); n];
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let mut tokens = 0usize;
    for chunk in rows.chunks(batch_size) {
        let batch = data.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let v = student.config.vocab_size;
        let logits = |m: &Decoder| m.forward_docs(batch.inputs.clone(), batch.docs.as_ref()).reshape([b * t, v]);
        let (zt, zs) = (logits(teacher), logits(student));
        let (lt, ls) = (log_softmax(zt.clone(), 1), log_softmax(zs.clone(), 1));
        let (mask, targets) = host_mask_targets(&batch);
        let teacher_top = host_ids(zt.clone().argmax(1));
        // KL(p || q) summed over the batch's real tokens, as `kl_divergence` sums it.
        let kl = |lp: &Tensor<2>, lq: &Tensor<2>| -> f64 {
            let per_row: Tensor<1> = (lp.clone().exp() * (lp.clone() - lq.clone())).sum_dim(1).reshape([b * t]);
            (per_row * batch.mask.clone()).sum().into_scalar::<f32>() as f64
        };
        for (i, z) in [Some(zt), Some(zs)].into_iter().chain(variants.iter().map(|_| None)).enumerate() {
            let z = z.unwrap_or_else(|| logits(variants[i - 2]));
            let lq = log_softmax(z.clone(), 1);
            kl_s[i] += kl(&ls, &lq);
            kl_t[i] += kl(&lt, &lq);
            kl_r[i] += kl(&lq, &lt);
            let (sum, at) = score(z, lq, &batch, &mask, &targets, &mut cal[i]);
            ce[i] += sum;
            agree[i] += (0..b * t).filter(|&j| mask[j] > 0.0 && at[j] == teacher_top[j]).count() as f64;
        }
        tokens += batch.real_tokens;
    }
    let per = |x: f64| x / tokens.max(1) as f64;
    (0..n)
        .map(|i| Compared {
            eval: result(ce[i], tokens),
            kl_student: per(kl_s[i]),
            kl_teacher: per(kl_t[i]),
            kl_reverse: per(kl_r[i]),
            agreement: per(agree[i]),
            ece: cal[i].ece(),
        })
        .collect()
}

fn host_ids(x: Tensor<2, burn::tensor::Int>) -> Vec<i64> {
    let n = x.dims().iter().product::<usize>();
    x.reshape([n]).into_data().convert::<i64>().try_into_vec::<i64>().expect("i64 ids")
}

/// A batch's loss mask and next-token targets on the host.
fn host_mask_targets(batch: &Batch) -> (Vec<f32>, Vec<i64>) {
    let mask: Vec<f32> = batch.mask.clone().into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 mask");
    let n = mask.len();
    (mask, host_ids(batch.targets.clone().reshape([n, 1])))
}

/// One model's logits `z` `[n, vocab]` and their log-softmax `lq` over `batch`: its
/// cross-entropy summed over the real tokens, each real token's top-1 confidence and
/// correctness added to `cal`, and its argmax ids.
fn score(
    z: Tensor<2>,
    lq: Tensor<2>,
    batch: &Batch,
    mask: &[f32],
    targets: &[i64],
    cal: &mut Calibration,
) -> (f64, Vec<i64>) {
    let (top, at) = lq.max_dim_with_indices(1);
    let n = mask.len();
    let conf: Vec<f32> = top.exp().reshape([n]).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
    let at = host_ids(at);
    for j in (0..n).filter(|&j| mask[j] > 0.0) {
        cal.add(conf[j] as f64, at[j] == targets[j]);
    }
    (ce_sum(z, batch), at)
}

/// What a cached teacher allows (its logits exist only as the cache's top-k over the training
/// split): a model's held-out loss, perplexity and calibration error, and its top-1 agreement
/// with the cache's top-1 ids at the cached positions of the first training rows.
#[derive(Debug, Clone, Copy)]
pub struct CachedCompared {
    pub eval: EvalResult,
    pub ece: f64,
    pub agreement: f64,
    /// The training positions the agreement is over.
    pub agreement_tokens: usize,
}

/// [`CachedCompared`] for each of `models`: the held-out split `valid`, and the first `rows`
/// rows of the cached training split `train`.
pub fn compare_cached(
    models: &[&Decoder],
    valid: &Packed,
    train: &Packed,
    cache: &crate::teacher::cache::CacheReader,
    rows: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<CachedCompared>> {
    let n = models.len();
    let (mut ce, mut cal, mut tokens) = (vec![0.0; n], vec![Calibration::default(); n], 0);
    let all: Vec<usize> = (0..valid.n_rows()).collect();
    for chunk in all.chunks(batch_size) {
        let batch = valid.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let (mask, targets) = host_mask_targets(&batch);
        for (i, m) in models.iter().enumerate() {
            let z = m.forward_docs(batch.inputs.clone(), batch.docs.as_ref()).reshape([b * t, m.config.vocab_size]);
            let lq = burn::tensor::activation::log_softmax(z.clone(), 1);
            ce[i] += score(z, lq, &batch, &mask, &targets, &mut cal[i]).0;
        }
        tokens += batch.real_tokens;
    }
    // The cache stores each row's loss positions in order; its top-1 is the largest stored logit.
    let (mut agree, mut positions) = (vec![0usize; n], 0usize);
    let cached: Vec<usize> = (0..rows.min(train.n_rows())).collect();
    for chunk in cached.chunks(batch_size) {
        let batch = train.batch(chunk, device);
        let [b, t] = batch.inputs.dims();
        let mut want = Vec::new();
        for (j, &r) in chunk.iter().enumerate() {
            let recs = cache.row(r)?;
            let at = train.loss_positions(r);
            if recs.len() != at.len() {
                return Err(Error::input(format!(
                    "teacher cache row {r}: {} records for {} loss positions: the cache is not this run's",
                    recs.len(),
                    at.len()
                )));
            }
            for (rec, p) in recs.iter().zip(at) {
                let top = (0..rec.ids.len()).fold(0, |a, k| if rec.logits[k] > rec.logits[a] { k } else { a });
                want.push((j * t + p, rec.ids[top] as i64));
            }
        }
        positions += want.len();
        for (i, m) in models.iter().enumerate() {
            let z = m.forward_docs(batch.inputs.clone(), batch.docs.as_ref()).reshape([b * t, m.config.vocab_size]);
            let at = host_ids(z.argmax(1));
            agree[i] += want.iter().filter(|(p, id)| at[*p] == *id).count();
        }
    }
    Ok((0..n)
        .map(|i| CachedCompared {
            eval: result(ce[i], tokens),
            ece: cal[i].ece(),
            agreement: agree[i] as f64 / positions.max(1) as f64,
            agreement_tokens: positions,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DecoderConfig, ModelShape};
    use burn::tensor::Tensor;

    /// Against a naive f64 sum over each real row's softmaxes (per-document rows, so some rows
    /// are padded and must not count), and zero against itself.
    #[test]
    fn kl_divergence_is_the_naive_masked_mean() {
        let dev = Device::flex();
        let c = DecoderConfig { vocab_size: 12, shape: ModelShape::for_tests(16, 1, 2, 1, 32) };
        let (p, q) = (c.init(1, &dev), c.init(2, &dev));
        let toks: Vec<u32> = vec![3, 4, 5, 0, 7, 8, 0, 1, 2, 3, 4, 5, 6, 9, 10, 0];
        let data = Packed::per_document(toks, 4, 0);
        let got = kl_divergence(&p, &q, &data, 2, &dev);
        let (mut sum, mut n) = (0.0f64, 0usize);
        for r in 0..data.n_rows() {
            let (inputs, _, mask) = data.row(r);
            let ids = Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(inputs.iter().map(|&x| x as i64).collect(), [1, inputs.len()]),
                &dev,
            );
            let lp: Vec<f32> = p.forward(ids.clone()).into_data().iter::<f32>().collect();
            let lq: Vec<f32> = q.forward(ids).into_data().iter::<f32>().collect();
            for (i, m) in mask.iter().enumerate() {
                if *m == 0.0 {
                    continue;
                }
                let row = |l: &[f32]| -> Vec<f64> {
                    let x: Vec<f64> = l[i * 12..(i + 1) * 12].iter().map(|&v| v as f64).collect();
                    let z = x.iter().map(|v| v.exp()).sum::<f64>().ln();
                    x.iter().map(|v| v - z).collect()
                };
                let (a, b) = (row(&lp), row(&lq));
                sum += a.iter().zip(&b).map(|(x, y)| x.exp() * (x - y)).sum::<f64>();
                n += 1;
            }
        }
        assert!(n < data.n_rows() * 4, "some rows are padded");
        let want = sum / n as f64;
        assert!(want > 1e-3 && (got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
        assert!(kl_divergence(&p, &p, &data, 2, &dev).abs() < 1e-7);
    }

    /// A stop between batches ends the pass with `Interrupted` (exit 130, resumable); without
    /// one the pass is [`evaluate`]'s over the whole split.
    #[test]
    fn evaluation_stops_between_batches() {
        let dev = Device::flex();
        let m = DecoderConfig { vocab_size: 12, shape: ModelShape::for_tests(16, 1, 2, 1, 32) }.init(1, &dev);
        let data = Packed::per_document((0..40u32).map(|i| i % 11 + 1).collect::<Vec<u32>>(), 4, 0);
        let stop = AtomicBool::new(false);
        let full = evaluate_or_stop(&m, &data, 2, &dev, &stop, "the test's evaluation").unwrap();
        let plain = evaluate(&m, &data, 2, None, &dev);
        assert_eq!((full.loss, full.tokens), (plain.loss, plain.tokens));
        assert!(full.tokens > 0 && full.loss.is_finite());
        stop.store(true, Ordering::SeqCst);
        let e = evaluate_or_stop(&m, &data, 2, &dev, &stop, "the test's evaluation").unwrap_err();
        assert!(matches!(e, Error::Interrupted(_)) && e.exit_code() == 130, "{e}");
        assert!(e.to_string().contains("during the test's evaluation"), "{e}");
    }

    /// The expected calibration error of three predictions, by hand: two at confidence 0.95
    /// (bin 14; one right: accuracy 0.5) and one at 0.5 (bin 7, right):
    /// 2/3 * |0.5 - 0.95| + 1/3 * |1 - 0.5| = 0.3 + 0.1667.
    #[test]
    fn calibration_error_by_hand() {
        let mut c = Calibration::default();
        c.add(0.95, true);
        c.add(0.95, false);
        c.add(0.5, true);
        assert!((c.ece() - (0.3 + 0.5 / 3.0)).abs() < 1e-12, "{}", c.ece());
        // A confidence of 1 falls in the last bin, not past it.
        let mut one = Calibration::default();
        one.add(1.0, true);
        assert_eq!(one.ece(), 0.0);
    }

    /// Agreement with the teacher, reverse KL and ECE in `compare` against naive per-token
    /// figures from each real row's softmaxes on the host.
    #[test]
    fn compare_agreement_reverse_kl_and_ece_are_the_naive_ones() {
        let dev = Device::flex();
        let c = DecoderConfig { vocab_size: 12, shape: ModelShape::for_tests(16, 1, 2, 1, 32) };
        let (teacher, student) = (c.init(1, &dev), c.init(2, &dev));
        let data = Packed::per_document((0..50u32).map(|i| (i * 7) % 11 + 1).collect::<Vec<u32>>(), 4, 0);
        let rows = compare(&teacher, &student, &[], &data, 3, &dev);
        let softmax_rows = |m: &Decoder, ids: &[u32]| -> Vec<Vec<f64>> {
            let t = Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
                &dev,
            );
            let z: Vec<f32> = m.forward(t).into_data().iter::<f32>().collect();
            z.chunks(12)
                .map(|r| {
                    let e: Vec<f64> = r.iter().map(|&v| (v as f64).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.iter().map(|x| x / s).collect()
                })
                .collect()
        };
        let argmax = |p: &[f64]| (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
        for (which, m) in [(0, &teacher), (1, &student)] {
            let (mut agree, mut rkl, mut n) = (0.0, 0.0, 0.0);
            let mut bins = vec![(0.0f64, 0.0f64, 0.0f64); ECE_BINS];
            for r in 0..data.n_rows() {
                let (inputs, targets, mask) = data.row(r);
                let (pt, pm) = (softmax_rows(&teacher, &inputs), softmax_rows(m, &inputs));
                for i in (0..mask.len()).filter(|&i| mask[i] > 0.0) {
                    n += 1.0;
                    agree += (argmax(&pm[i]) == argmax(&pt[i])) as u8 as f64;
                    rkl += pm[i].iter().zip(&pt[i]).map(|(q, p)| q * (q.ln() - p.ln())).sum::<f64>();
                    let conf = pm[i][argmax(&pm[i])];
                    let bin = &mut bins[((conf * 15.0).floor() as usize).min(14)];
                    *bin = (bin.0 + 1.0, bin.1 + conf, bin.2 + (argmax(&pm[i]) == targets[i] as usize) as u8 as f64);
                }
            }
            let ece: f64 = bins.iter().filter(|b| b.0 > 0.0).map(|b| b.0 / n * (b.2 / b.0 - b.1 / b.0).abs()).sum();
            let got = rows[which];
            assert!((got.agreement - agree / n).abs() < 1e-12, "{which}: {} vs {}", got.agreement, agree / n);
            assert!((got.kl_reverse - rkl / n).abs() < 1e-5, "{which}: {} vs {}", got.kl_reverse, rkl / n);
            assert!((got.ece - ece).abs() < 1e-5, "{which}: {} vs {ece}", got.ece);
        }
        assert_eq!(rows[0].agreement, 1.0);
        assert!(rows[1].agreement < 1.0 && rows[1].kl_reverse > 1e-3 && rows[1].ece > 0.0);
    }

    /// From a cache of the teacher (every logit kept, f16): the held-out loss and ECE are
    /// `compare`'s, the student's agreement is the naive count of its argmax equal to the live
    /// teacher's at the cached positions of the first rows, and the teacher agrees with itself.
    #[test]
    fn cached_comparison_is_what_the_cache_allows() {
        use crate::teacher::cache::{self, test_fixture as fx};
        let dev = Device::flex();
        let c = DecoderConfig { vocab_size: fx::V, shape: ModelShape::for_tests(16, 1, 2, 1, 32) };
        let (teacher, student) = (c.init(1, &dev), c.init(2, &dev));
        let mut rng = crate::rng::SplitMix(3);
        let train = Packed::new((0..5 * fx::T + 1).map(|_| rng.below(fx::V) as u32).collect::<Vec<u32>>(), fx::T, 0);
        let valid = Packed::per_document((0..50u32).map(|i| (i * 7) % 200 + 1).collect::<Vec<u32>>(), 4, 0);
        let dir = fx::tmp("eval-cached");
        let id = fx::ident(fx::V, crate::teacher::codec::ValueCodec::F16, train.n_rows(), "data");
        let stop = AtomicBool::new(false);
        let opts = cache::BuildOptions { batch_size: 2, quiet: true, stop: &stop, teacher: Default::default() };
        cache::build(&dir, &id, &train, cache::decoder_select(&teacher, &train, &dev, &id), &opts).unwrap();
        let reader = cache::CacheReader::open(&dir, &fx::expect(&id)).unwrap();
        let got = compare_cached(&[&student, &teacher], &valid, &train, &reader, 4, 3, &dev).unwrap();
        let live = compare(&teacher, &student, &[], &valid, 3, &dev);
        assert_eq!((got[0].eval.loss, got[0].ece), (live[1].eval.loss, live[1].ece));
        let argmaxes = |m: &Decoder, ids: &[u32]| -> Vec<usize> {
            let z: Vec<f32> = m.forward(crate::model::token_tensor(ids, &dev)).into_data().iter::<f32>().collect();
            z.chunks(fx::V).map(|r| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b })).collect()
        };
        let (mut agree, mut n) = (0usize, 0usize);
        for r in 0..4 {
            let (inputs, _, _) = train.row(r);
            let (t, s) = (argmaxes(&teacher, &inputs), argmaxes(&student, &inputs));
            for p in train.loss_positions(r) {
                n += 1;
                agree += (t[p] == s[p]) as usize;
            }
        }
        assert_eq!(got[0].agreement_tokens, n);
        assert!((got[0].agreement - agree as f64 / n as f64).abs() < 1e-12, "{} vs {agree}/{n}", got[0].agreement);
        // The teacher against its own cache: all but f16 near-ties.
        assert!(got[1].agreement > 0.95, "{}", got[1].agreement);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One pass gives what the figure-by-figure functions give, to the bit: each model's
    /// loss, and its KL from the student and from the teacher (zero from itself).
    #[test]
    fn compare_is_evaluate_and_kl_divergence() {
        let dev = Device::flex();
        let c = DecoderConfig { vocab_size: 12, shape: ModelShape::for_tests(16, 1, 2, 1, 32) };
        let (teacher, student, a, b) = (c.init(1, &dev), c.init(2, &dev), c.init(3, &dev), c.init(4, &dev));
        let data = Packed::per_document((0..50u32).map(|i| (i * 7) % 11 + 1).collect::<Vec<u32>>(), 4, 0);
        let rows = compare(&teacher, &student, &[&a, &b], &data, 3, &dev);
        for (r, m) in rows.iter().zip([&teacher, &student, &a, &b]) {
            let e = evaluate(m, &data, 3, None, &dev);
            assert_eq!((r.eval.loss, r.eval.tokens), (e.loss, e.tokens));
            assert_eq!(r.kl_student, kl_divergence(&student, m, &data, 3, &dev));
            assert_eq!(r.kl_teacher, kl_divergence(&teacher, m, &data, 3, &dev));
        }
        assert!(rows[0].kl_teacher.abs() < 1e-7 && rows[1].kl_student.abs() < 1e-7);
        assert!(rows[2].kl_teacher > 1e-3 && rows[3].kl_student > 1e-3);
    }
}
