//! The distillation objective:
//! `alpha * CE(student, labels) + (1 - alpha) * tau^2 * D(p_teacher(tau), p_student(tau))`,
//! averaged over the non-padded tokens only, where D is forward KL (the default), reverse KL,
//! generalized JSD(beta), skew forward / reverse KL(lambda) or total variation.
//!
//! Computed in chunks of rows so that at most one chunk of `[tokens, vocab]` probabilities is
//! built at a time in the forward pass (the vocabulary softmax is where memory goes).

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor};

use crate::util::accumulate;

pub mod hidden;

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
    /// Full teacher logits (tokens, vocab).
    Full(Tensor<2>),
    TopK(TopK),
    /// An online teacher's final hidden states `(tokens, d)` and its LM head `(vocab, d)`
    /// (plain tensors): each chunk's logits are made from them just before the loss needs
    /// them, so that the teacher's `[tokens, vocab]` logits never exist beyond one chunk (at
    /// vocabulary 128k they are the largest tensor of the step: 8.4 GB in f32 for 16k tokens).
    Hidden {
        hidden: Tensor<2>,
        head: Tensor<2>,
    },
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
        let per_row = match teacher.map(|t| t.rows(start, end)) {
            None => None,
            Some(Target::Hidden { .. }) => unreachable!("rows() makes a chunk's logits"),
            Some(Target::Full(t)) => {
                let t = as_dtype(t, DType::F32);
                Some(divergence_rows(cfg.divergence, log_softmax(t / tau, 1), log_softmax(s / tau, 1)))
            }
            Some(Target::TopK(tk)) => {
                let k = tk.ids.dims()[1];
                let (ids, lt) = (tk.ids, tk.logp);
                let s = s / tau;
                let kept = s.clone().gather(1, ids.clone());
                let (lt, ls) = match tk.tail {
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
                        let lt_other = tail.unsqueeze_dim::<2>(1);
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
    /// Rows `start..end` of the targets; teacher hidden states become those rows' logits (f32).
    fn rows(&self, start: usize, end: usize) -> Target {
        match self {
            Target::Hidden { hidden, head } => {
                let logits = hidden.clone().slice([start..end]).matmul(head.clone().transpose());
                Target::Full(as_dtype(logits, DType::F32))
            }
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
    streamed(student, teacher, targets, mask, cfg, true)
}

/// Whether a chunk's gradient has the closed form of [`closed_form_chunk`]: hard labels alone,
/// or full teacher logits with forward KL (the default and by far the most used setting).
fn has_closed_form(teacher: Option<&Target>, d: Divergence) -> bool {
    match teacher {
        None => true,
        Some(Target::Full(_) | Target::Hidden { .. }) => {
            d == Divergence::ForwardKl || d == Divergence::Jsd { beta: 0.0 }
        }
        Some(Target::TopK(_)) => false,
    }
}

/// One chunk's weighted CE and KL sums and its gradient with respect to the student logits, in
/// closed form on plain tensors (no autodiff graph: the expensive part of the loss on a GPU is
/// launching and keeping the graph's kernels, not the arithmetic). With `w_i = m_i / W`:
///
///   dL/ds_i = w_i [ alpha (softmax(s_i) - onehot(y_i)) + (1 - alpha) tau (softmax(s_i / tau) - softmax(t_i / tau)) ]
///
/// for L = sum_i w_i [alpha CE_i + (1 - alpha) tau^2 KL(p_t || p_s)_i]; without a teacher,
/// dL/ds_i = w_i (softmax(s_i) - onehot(y_i)). Equal to the autodiff chunk (tested).
fn closed_form_chunk(
    s: Tensor<2>,
    teacher: Option<Tensor<2>>,
    tgt: Tensor<2, Int>,
    w: Tensor<1>,
    cfg: KdConfig,
) -> (Tensor<1>, Tensor<1>, Tensor<2>) {
    let alpha = if teacher.is_some() { cfg.alpha } else { 1.0 };
    match crate::kernels::cpu::kd_closed_form(&s, teacher.as_ref(), &tgt, &w, alpha, cfg.temperature) {
        Some(out) => out,
        None => closed_form_reference(s, teacher, tgt, w, cfg),
    }
}

/// [`closed_form_chunk`] composed of burn's tensor ops: every backend's path, and what the CPU
/// kernel is tested against.
pub(crate) fn closed_form_reference(
    s: Tensor<2>,
    teacher: Option<Tensor<2>>,
    tgt: Tensor<2, Int>,
    w: Tensor<1>,
    cfg: KdConfig,
) -> (Tensor<1>, Tensor<1>, Tensor<2>) {
    let [n, _] = s.dims();
    let w = w.reshape([n, 1]);
    let logp = log_softmax(s.clone(), 1);
    let ce = (logp.clone().gather(1, tgt.clone()).neg() * w.clone()).sum();
    let hard = if teacher.is_some() { cfg.alpha } else { 1.0 };
    let onehot = Tensor::<2>::full([n, 1], -hard, &s.device());
    let mut grad = (logp.exp() * hard).scatter(1, tgt, onehot, IndexingUpdateOp::Add);
    let kl = match teacher {
        None => Tensor::zeros([1], &s.device()),
        Some(t) => {
            let tau = cfg.temperature;
            let (ls, lt) = (log_softmax(s / tau, 1), log_softmax(t / tau, 1));
            let pt = lt.clone().exp();
            let kl = (pt.clone() * (lt - ls.clone())).sum_dim(1);
            grad = grad + (ls.exp() - pt) * ((1.0 - cfg.alpha) * tau);
            (kl * w.clone()).sum()
        }
    };
    (ce, kl, grad * w)
}

/// `x` in `dtype`, without a cast (a kernel, and a graph node under autodiff) when it is already.
fn as_dtype<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// One chunk's share of the loss (its parts already divided by the whole batch's weight) and
/// the gradient of the loss with respect to its logits.
struct ChunkOut {
    total: Tensor<1>,
    ce: Tensor<1>,
    kl: Tensor<1>,
    grad: Tensor<2>,
}

/// The loss of rows `start..end` from their student logits `s` (plain, f32): in closed form
/// where there is one, else through a small autodiff graph of its own.
#[allow(clippy::too_many_arguments)]
fn chunk_loss(
    s: Tensor<2>,
    teacher: Option<&Target>,
    rows: std::ops::Range<usize>,
    targets: &Tensor<1, Int>,
    mask: &Tensor<1>,
    count: &Tensor<1>,
    cfg: KdConfig,
    closed_form: bool,
) -> ChunkOut {
    let (start, end) = (rows.start, rows.end);
    let v = s.dims()[1];
    if closed_form {
        let t = match teacher.map(|t| t.rows(start, end)) {
            // Plain (`inner` leaves the online teacher's plain logits as they are) and in f32
            // whatever the teacher's precision: its log-probabilities as exact as the student's.
            Some(Target::Full(t)) => Some(as_dtype(t.inner(), DType::F32)),
            _ => None,
        };
        let tgt = targets.clone().slice([start..end]).inner().unsqueeze_dim::<2>(1);
        let w = mask.clone().slice([start..end]).inner() / count.clone();
        let (ce, kl, grad) = closed_form_chunk(s, t, tgt, w, cfg);
        let total = combine(ce.clone(), kl.clone(), teacher.is_some(), cfg);
        return ChunkOut { total, ce, kl, grad };
    }
    let device = s.device();
    let s = s.autodiff().require_grad();
    let m = mask.clone().slice([start..end]);
    let target = teacher.map(|t| t.rows(start, end));
    let whole = KdConfig { chunk_tokens: usize::MAX, ..cfg };
    let sums = kd_sums(s.clone(), target.as_ref(), targets.clone().slice([start..end]), m, whole);
    let (c, k) = (sums.ce / count.clone().autodiff(), sums.kl / count.clone().autodiff());
    let part = combine(c.clone(), k.clone(), teacher.is_some(), cfg);
    let g = part.clone().backward();
    let grad = s.grad(&g).unwrap_or_else(|| Tensor::zeros([end - start, v], &device));
    ChunkOut { total: part.inner(), ce: c.inner(), kl: k.inner(), grad }
}

/// Sums of the chunks' parts, kept on the device.
#[derive(Default)]
struct Parts {
    total: Option<Tensor<1>>,
    ce: Option<Tensor<1>>,
    kl: Option<Tensor<1>>,
}

impl Parts {
    fn add(&mut self, c: &ChunkOut) {
        accumulate(&mut self.total, c.total.clone());
        accumulate(&mut self.ce, c.ce.clone());
        accumulate(&mut self.kl, c.kl.clone());
    }

    /// The loss: `surrogate` carries the stitched gradient into the model's graph, and a
    /// constant offset gives it the loss's value.
    fn into_loss(self, surrogate: Tensor<1>, device: &burn::tensor::Device) -> KdLoss {
        let zero = || Tensor::<1>::zeros([1], device);
        let offset = self.total.unwrap_or_else(zero) - surrogate.clone().inner();
        KdLoss {
            total: surrogate + Tensor::from_inner(offset),
            ce: self.ce.unwrap_or_else(zero).autodiff(),
            kl: self.kl.unwrap_or_else(zero).autodiff(),
        }
    }
}

/// [`kd_loss_streamed`], with `closed_form = false` forcing every chunk through autodiff (the
/// reference the closed form is tested against).
fn streamed(
    student: Tensor<2>,
    teacher: Option<Target>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
    closed_form: bool,
) -> KdLoss {
    let [n, v] = student.dims();
    let plain = student.clone().inner();
    // Every chunk's sums are divided by the whole batch's weight (see kd_loss_to). The sums stay
    // on the device: reading a value back would stall a GPU once per chunk.
    let count = mask.clone().inner().sum().clamp_min(f32::MIN_POSITIVE);
    let closed_form = closed_form && has_closed_form(teacher.as_ref(), cfg.divergence);
    let mut parts = Parts::default();
    let mut grads = Vec::new();
    for start in (0..n).step_by(cfg.chunk_tokens.max(1)) {
        let end = (start + cfg.chunk_tokens.max(1)).min(n);
        let s = plain.clone().slice([start..end, 0..v]);
        let c = chunk_loss(s, teacher.as_ref(), start..end, &targets, &mask, &count, cfg, closed_form);
        parts.add(&c);
        grads.push(c.grad);
    }
    let g = Tensor::cat(grads, 0).autodiff();
    parts.into_loss((student * g).sum(), &plain.device())
}

/// The loss from the student's last hidden states `hidden` `(tokens, d)` and its LM head
/// `head` `(vocab, d)` (both tracked), the head fused into the chunks: each chunk's logits are
/// made, used and dropped (`[tokens, vocab]` never exists, in any dtype), and the gradients
/// with respect to the hidden states and the head come from each chunk's logit gradient G:
/// `dH = G W`, `dW = sum over chunks of G^T H`. The value and gradients equal
/// [`kd_loss_streamed`] over `hidden W^T` (tested); memory is one chunk of logits and `dW`.
/// Matmuls run in the hidden states' dtype (bf16 under mixed precision), the loss in f32.
pub fn kd_loss_fused_head(
    hidden: Tensor<2>,
    head: Tensor<2>,
    teacher: Option<Target>,
    targets: Tensor<1, Int>,
    mask: Tensor<1>,
    cfg: KdConfig,
) -> KdLoss {
    let [n, _] = hidden.dims();
    let (h, w) = (hidden.clone().inner(), head.clone().inner());
    let dtype = h.dtype();
    let count = mask.clone().inner().sum().clamp_min(f32::MIN_POSITIVE);
    let closed_form = has_closed_form(teacher.as_ref(), cfg.divergence);
    let wt = w.clone().transpose();
    let mut parts = Parts::default();
    let (mut dh, mut dw) = (Vec::new(), None::<Tensor<2>>);
    for start in (0..n).step_by(cfg.chunk_tokens.max(1)) {
        let end = (start + cfg.chunk_tokens.max(1)).min(n);
        let hc = h.clone().slice([start..end]);
        let z = as_dtype(hc.clone().matmul(wt.clone()), DType::F32);
        let c = chunk_loss(z, teacher.as_ref(), start..end, &targets, &mask, &count, cfg, closed_form);
        parts.add(&c);
        let g = as_dtype(c.grad, dtype);
        dh.push(g.clone().matmul(w.clone()));
        #[cfg(feature = "tch")]
        if crate::kernels::torch::add_matmul_tn(&mut dw, &g, &hc) {
            continue;
        }
        accumulate(&mut dw, as_dtype(g.transpose().matmul(hc), DType::F32));
    }
    let dh = Tensor::cat(dh, 0);
    let dw = dw.map_or_else(|| w.zeros_like(), |d| as_dtype(d, dtype));
    #[cfg(feature = "tch")]
    let (hidden, head, dh, dw) = match crate::kernels::torch::given_grads(hidden, head, dh, dw) {
        Ok(zero) => return parts.into_loss(zero, &h.device()),
        Err(back) => back,
    };
    // Autodiff gets dH and dW as the gradients of this surrogate (its value is not used).
    let surrogate =
        as_dtype((hidden * dh.autodiff()).sum(), DType::F32) + as_dtype((head * dw.autodiff()).sum(), DType::F32);
    parts.into_loss(surrogate, &h.device())
}

#[cfg(test)]
mod hidden_tests;
#[cfg(test)]
mod tests;
