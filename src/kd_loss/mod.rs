//! The distillation objective:
//! `alpha * CE(student, labels) + (1 - alpha) * tau^2 * D(p_teacher(tau), p_student(tau))`,
//! averaged over the non-padded tokens only, where D is forward KL (the default), reverse KL,
//! generalized JSD(beta), skew forward / reverse KL(lambda) or total variation.
//!
//! Computed in chunks of rows so that at most one chunk of `[tokens, vocab]` probabilities is
//! built at a time in the forward pass (the vocabulary softmax is where memory goes).

use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// A divergence with its parameter, as the loss uses it (the recipe's `[distill]` section
/// names the kind and its parameter separately; `DistillSection::divergence` joins them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    ForwardKl,
    ReverseKl,
    Jsd { beta: f64 },
    SkewForwardKl { lambda: f64 },
    SkewReverseKl { lambda: f64 },
    Tv,
}

#[derive(Debug, Clone, Copy)]
pub struct KdConfig {
    pub alpha: f64,
    pub temperature: f64,
    /// Rows (tokens) per chunk.
    pub chunk_tokens: usize,
    pub divergence: Divergence,
}

/// log(w_a exp(a) + w_b exp(b)) elementwise, without overflow or log(0) (w_a, w_b > 0).
fn log_mix(a: Tensor<2>, wa: f64, b: Tensor<2>, wb: f64) -> Tensor<2> {
    let (a, b) = (a + wa.ln(), b + wb.ln());
    let m = a.clone().max_pair(b.clone());
    m.clone() + ((a - m.clone()).exp() + (b - m).exp()).log()
}

/// KL(p || q) per row from log-probabilities.
fn kl_rows(lp: Tensor<2>, lq: Tensor<2>) -> Tensor<1> {
    (lp.clone().exp() * (lp - lq)).sum_dim(1).squeeze_dim::<1>(1)
}

/// The divergence between teacher (`lt`) and student (`ls`) log-probabilities, per row.
fn divergence_rows(d: Divergence, lt: Tensor<2>, ls: Tensor<2>) -> Tensor<1> {
    match d {
        Divergence::ForwardKl => kl_rows(lt, ls),
        Divergence::ReverseKl => kl_rows(ls, lt),
        // As in GKD / TRL: beta = 0 is forward KL, beta = 1 reverse KL, and in between
        // beta KL(p_t || m) + (1 - beta) KL(p_s || m) with m = beta p_t + (1 - beta) p_s.
        Divergence::Jsd { beta } if beta <= 0.0 => kl_rows(lt, ls),
        Divergence::Jsd { beta } if beta >= 1.0 => kl_rows(ls, lt),
        Divergence::Jsd { beta } => {
            let m = log_mix(lt.clone(), beta, ls.clone(), 1.0 - beta);
            kl_rows(lt, m.clone()) * beta + kl_rows(ls, m) * (1.0 - beta)
        }
        // DistiLLM: KL(p_t || lambda p_t + (1 - lambda) p_s), and the mirror image.
        Divergence::SkewForwardKl { lambda } if lambda <= 0.0 => kl_rows(lt, ls),
        Divergence::SkewForwardKl { lambda } => {
            let m = log_mix(lt.clone(), lambda, ls, 1.0 - lambda);
            kl_rows(lt, m)
        }
        Divergence::SkewReverseKl { lambda } if lambda <= 0.0 => kl_rows(ls, lt),
        Divergence::SkewReverseKl { lambda } => {
            let m = log_mix(ls.clone(), lambda, lt, 1.0 - lambda);
            kl_rows(ls, m)
        }
        Divergence::Tv => (lt.exp() - ls.exp()).abs().sum_dim(1).squeeze_dim::<1>(1) * 0.5,
    }
}

/// The total loss (with graph) and its two parts (for logging).
pub struct KdLoss {
    pub total: Tensor<1>,
    pub ce: Tensor<1>,
    pub kl: Tensor<1>,
}

/// A teacher's top-k targets (from the offline cache): (tokens, k) ids and the teacher's
/// log-probabilities of them at the training temperature, and with `tail` the log of the
/// teacher's remaining mass, which becomes one extra "other" category. Without `tail` the
/// kept entries were renormalized. The student's side always comes from its full-vocabulary
/// log-sum-exp.
pub struct TopK {
    pub ids: Tensor<2, Int>,
    pub logp: Tensor<2>,
    pub tail: Option<Tensor<1>>,
}

/// What the student is distilled towards.
// Both variants hold tensor handles (a few words each): the size gap clippy sees is in the
// handles' types, not in data, and boxing would add an allocation per batch for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// Full teacher logits (tokens, vocab) (online teacher).
    Full(Tensor<2>),
    TopK(TopK),
}

/// log(sum(exp(x))) over dim 1, as (rows, 1).
fn logsumexp_rows(x: Tensor<2>) -> Tensor<2> {
    let m = x.clone().max_dim(1).detach();
    m.clone() + (x - m).exp().sum_dim(1).log()
}

/// `student`, `teacher`: logits (tokens, vocab); `targets`: (tokens); `mask`: (tokens), 1 for
/// a real token and 0 for padding. `teacher = None` trains on hard labels only (alpha = 1).
pub fn kd_loss(
    student: Tensor<2>,
    teacher: Option<Tensor<2>>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
) -> KdLoss {
    kd_loss_to(student, teacher.map(Target::Full), targets, mask, cfg)
}

/// [`kd_loss`] towards full logits or top-k targets.
pub fn kd_loss_to(
    student: Tensor<2>,
    teacher: Option<Target>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
) -> KdLoss {
    // The weighted mean over real tokens: sum_i w_i L_i / sum_i w_i. The denominator is only
    // kept away from zero (an all-padding batch has a zero numerator too), never clamped to 1:
    // curriculum weights below 1 can make a batch's weight sum lie in (0, 1).
    let count = mask.clone().sum().clamp_min(f32::MIN_POSITIVE as f64);
    let sums = kd_sums(student, teacher.as_ref(), targets, mask, cfg);
    let ce = sums.ce / count.clone();
    let kl = sums.kl / count;
    let total = combine(ce.clone(), kl.clone(), teacher.is_some(), cfg);
    KdLoss { total, ce, kl }
}

/// `alpha * CE + (1 - alpha) * tau^2 * D`, or CE alone without a teacher.
fn combine(ce: Tensor<1>, kl: Tensor<1>, has_teacher: bool, cfg: KdConfig) -> Tensor<1> {
    let tau = cfg.temperature;
    match has_teacher {
        true => ce * cfg.alpha + kl * ((1.0 - cfg.alpha) * tau * tau),
        false => ce,
    }
}

/// The mask-weighted sums of the per-token CE and divergence (not yet divided by the weight).
struct Sums {
    ce: Tensor<1>,
    kl: Tensor<1>,
}

fn kd_sums(
    student: Tensor<2>,
    teacher: Option<&Target>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
) -> Sums {
    let [n, v] = student.dims();
    let tau = cfg.temperature;
    let device = student.device();
    let mut ce_sum = Tensor::<1>::zeros([1], &device);
    let mut kl_sum = Tensor::<1>::zeros([1], &device);
    let chunk = cfg.chunk_tokens.max(1);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let s = student.clone().slice([start..end, 0..v]);
        let m = mask.clone().slice([start..end]);
        let tgt = targets.clone().slice([start..end]).unsqueeze_dim::<2>(1);
        let logp = log_softmax(s.clone(), 1);
        let nll = logp.gather(1, tgt).squeeze_dim::<1>(1).neg();
        ce_sum = ce_sum + (nll * m.clone()).sum();
        let per_row = match teacher {
            None => None,
            Some(Target::Full(t)) => {
                let t = t.clone().slice([start..end, 0..v]);
                Some(divergence_rows(cfg.divergence, log_softmax(t / tau, 1), log_softmax(s / tau, 1)))
            }
            Some(Target::TopK(tk)) => {
                let k = tk.ids.dims()[1];
                let ids = tk.ids.clone().slice([start..end, 0..k]);
                let lt = tk.logp.clone().slice([start..end, 0..k]);
                let s = s / tau;
                let kept = s.clone().gather(1, ids.clone());
                let (lt, ls) = match &tk.tail {
                    Some(tail) => {
                        // The student's tail exactly: the log-sum-exp of the entries not kept.
                        let lse = logsumexp_rows(s.clone());
                        let dev = s.device();
                        let kept_mask = Tensor::<2>::zeros([end - start, v], &dev).scatter(
                            1,
                            ids,
                            Tensor::ones([end - start, k], &dev),
                            IndexingUpdateOp::Add,
                        );
                        let ls_other = logsumexp_rows(s - kept_mask * 1e9) - lse.clone();
                        let lt_other = tail.clone().slice([start..end]).unsqueeze_dim::<2>(1);
                        (Tensor::cat(vec![lt, lt_other], 1), Tensor::cat(vec![kept - lse, ls_other], 1))
                    }
                    // The teacher's kept entries were renormalized to sum to one: renormalize the
                    // student's over the same ids, so both are distributions on the kept set.
                    // (With the full-vocabulary log-sum-exp the student's side sums to Z < 1, and
                    // reverse KL / JSD reward pushing mass outside the kept ids.)
                    None => {
                        let lse_kept = logsumexp_rows(kept.clone());
                        (lt, kept - lse_kept)
                    }
                };
                Some(divergence_rows(cfg.divergence, lt, ls))
            }
        };
        if let Some(per_row) = per_row {
            kl_sum = kl_sum + (per_row * m).sum();
        }
        start = end;
    }
    Sums { ce: ce_sum, kl: kl_sum }
}

impl Target {
    /// Rows `start..end` of the targets.
    fn rows(&self, start: usize, end: usize) -> Target {
        match self {
            Target::Full(t) => {
                let v = t.dims()[1];
                Target::Full(t.clone().slice([start..end, 0..v]))
            }
            Target::TopK(tk) => {
                let k = tk.ids.dims()[1];
                Target::TopK(TopK {
                    ids: tk.ids.clone().slice([start..end, 0..k]),
                    logp: tk.logp.clone().slice([start..end, 0..k]),
                    tail: tk.tail.as_ref().map(|t| t.clone().slice([start..end])),
                })
            }
        }
    }
}

/// [`kd_loss_to`] holding one chunk's intermediates at a time, also through backward: each
/// chunk's loss and its gradient with respect to the student logits are computed on a small
/// graph of their own, and one surrogate, sum(logits * G), carries the stitched gradient G into
/// the model's graph. The value and the gradient equal [`kd_loss_to`]'s; the peak memory is the
/// logits, G and one chunk instead of every chunk's softmax intermediates, which autodiff
/// otherwise keeps until backward.
pub fn kd_loss_streamed(
    student: Tensor<2>,
    teacher: Option<Target>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
) -> KdLoss {
    let [n, v] = student.dims();
    let device = student.device();
    let plain = student.clone().inner();
    // Every chunk's sums are divided by the whole batch's weight (see kd_loss_to).
    let count = (mask.clone().inner().sum().into_scalar::<f32>() as f64).max(f32::MIN_POSITIVE as f64);
    let chunk = cfg.chunk_tokens.max(1);
    let whole = KdConfig { chunk_tokens: usize::MAX, ..cfg };
    let (mut total, mut ce, mut kl) = (0.0f64, 0.0f64, 0.0f64);
    let mut grads = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let s = plain.clone().slice([start..end, 0..v]).autodiff().require_grad();
        let m = mask.clone().slice([start..end]);
        let target = teacher.as_ref().map(|t| t.rows(start, end));
        let sums = kd_sums(s.clone(), target.as_ref(), targets.clone().slice([start..end]), m, whole);
        let (c, k) = (sums.ce / count, sums.kl / count);
        let part = combine(c.clone(), k.clone(), teacher.is_some(), cfg);
        let g = part.clone().backward();
        grads.push(s.grad(&g).unwrap_or_else(|| Tensor::zeros([end - start, v], &plain.device())));
        total += part.into_scalar::<f32>() as f64;
        ce += c.into_scalar::<f32>() as f64;
        kl += k.into_scalar::<f32>() as f64;
        start = end;
    }
    let g = Tensor::cat(grads, 0).autodiff();
    let surrogate = (student * g).sum();
    let offset = total - surrogate.clone().inner().into_scalar::<f32>() as f64;
    let value = |x: f64| Tensor::<1>::from_floats([x as f32], &device);
    KdLoss { total: surrogate + offset, ce: value(ce), kl: value(kl) }
}

#[cfg(test)]
mod tests;
