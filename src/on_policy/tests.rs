//! On-policy batches and their loss against references: the rows are the prompts and what
//! [`crate::generate::generate`] writes alone from the same generator, and the loss and its
//! gradients equal the divergence spelled out naively over full logits.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};

use super::*;
use crate::data::config::Packing;
use crate::data::tokens::{DOC_START, LOSS};
use crate::generate::generate;
use crate::kd_loss::{KdConfig, Target, kd_loss_fused_head};
use crate::model::DecoderConfig;

const V: usize = 24;
const EOS: u32 = 23;

fn model(seed: u64, d: usize, layers: usize, dev: &Device) -> Decoder {
    let shape = crate::recipe::PartialShape {
        d_model: Some(d),
        n_layers: Some(layers),
        n_heads: Some(4),
        n_kv_heads: Some(2),
        d_ff: Some(2 * d),
        max_seq_len: Some(64),
        ..Default::default()
    }
    .to_shape()
    .unwrap();
    DecoderConfig { vocab_size: V, shape }.init(seed, dev)
}

/// Three conversations, one per row: prompt tokens (no loss) then an answer (loss), EOS last.
fn data(seq_len: usize) -> Packed {
    let docs: [(&[u32], &[u32]); 3] =
        [(&[1, 5, 9, 2], &[7, 7, 3, EOS]), (&[1, 4], &[11, 12, 13, 14, 15, EOS]), (&[1, 6, 6, 6, 8, 2, 3], &[9, EOS])];
    let (mut tokens, mut flags) = (Vec::new(), Vec::new());
    for (p, a) in docs {
        tokens.extend(p.iter().chain(a));
        flags.extend(p.iter().enumerate().map(|(i, _)| if i == 0 { DOC_START } else { 0 }));
        flags.extend(a.iter().map(|_| LOSS));
    }
    Packed::build(tokens, Some(flags.into()), seq_len, EOS, Packing::DocPerRow)
}

/// Each on-policy row is its prompt (the tokens before the first answer token) followed by
/// what the student writes from it alone (same generator, one prompt at a time), the stop id
/// included when drawn, and only those written tokens are targets in the loss.
#[test]
fn rollout_rows_are_the_prompt_and_the_students_own_sample() {
    let dev = Device::flex();
    let student = model(3, 16, 2, &dev);
    let train = data(16);
    let rows = [2usize, 0, 1];
    let cfg = OnPolicySection { fraction: 1.0, max_new_tokens: 9, temperature: 1.0, ..Default::default() };
    let at = (41, 7, 1);
    let r = rollout(&cfg, &student, &train, &rows, &[EOS], at, &dev, &dev);
    let t = 16;
    let inputs: Vec<i64> = r.batch.inputs.into_data().convert::<i64>().try_to_vec().unwrap();
    let targets: Vec<i64> = r.batch.targets.into_data().convert::<i64>().try_to_vec().unwrap();
    let mask: Vec<f32> = r.batch.mask.into_data().try_to_vec().unwrap();
    let mut written = 0;
    for (i, &row) in rows.iter().enumerate() {
        let (ri, _, rm) = train.row(row);
        let prompt = prompt_of(&ri, &rm).unwrap();
        let alone = Sampling { seed: draw_rng(at.0, at.1, at.2, i as u64).0, ..cfg.sampling() };
        let mut want = generate(&student, &prompt, EOS, &alone, &dev, |_| {});
        if want.len() < cfg.max_new_tokens {
            want.push(EOS); // stopped by the stop id, which is a target too
        }
        let p = prompt.len();
        let row_in: Vec<u32> = inputs[i * t..(i + 1) * t].iter().map(|&x| x as u32).collect();
        let row_tg: Vec<u32> = targets[i * t..(i + 1) * t].iter().map(|&x| x as u32).collect();
        assert_eq!(row_in[..p], prompt[..], "row {i}: the prompt comes first");
        let n = want.len().min(t + 1 - p);
        assert_eq!(row_tg[p - 1..p - 1 + n], want[..n], "row {i}: the targets are the student's tokens");
        assert_eq!(row_in[p..p - 1 + n], want[..n - 1], "row {i}: and its inputs, shifted");
        let ones: Vec<usize> = (0..t).filter(|&j| mask[i * t + j] > 0.0).collect();
        assert_eq!(ones, (p - 1..p - 1 + n).collect::<Vec<_>>(), "row {i}: the loss covers the sample only");
        written += n;
    }
    assert_eq!(r.sampled, written);
    assert_eq!(r.batch.real_tokens, written);
}

/// The divergence between the student's and the teacher's softmax at temperature `tau` per
/// token, spelled out over the full logits: reverse KL(s || t), forward KL(t || s), or the
/// generalized JSD with the mixture `beta t + (1 - beta) s`; masked mean times tau^2.
fn naive_loss(s: Tensor<2>, t: Tensor<2>, mask: Tensor<1>, div: OnPolicyDivergence, beta: f64, tau: f64) -> Tensor<1> {
    let [n, _] = s.dims();
    let ls = log_softmax(s / tau, 1);
    let lt = log_softmax(t / tau, 1);
    let kl = |lp: Tensor<2>, lq: Tensor<2>| (lp.clone().exp() * (lp - lq)).sum_dim(1).reshape([n]);
    let per = match div {
        OnPolicyDivergence::ReverseKl => kl(ls, lt),
        OnPolicyDivergence::ForwardKl => kl(lt, ls),
        OnPolicyDivergence::Jsd => {
            let m = (lt.clone().exp() * beta + ls.clone().exp() * (1.0 - beta)).log();
            kl(lt, m.clone()) * beta + kl(ls, m) * (1.0 - beta)
        }
    };
    (per * mask.clone()).sum() / mask.sum() * (tau * tau)
}

/// The on-policy loss (alpha 0: the divergence alone) through the trainer's chunked fused-head
/// loss, and its gradients with respect to the student's weights, equal the naive divergence
/// over full logits on the rollout's rows, for each divergence and two temperatures.
#[test]
fn on_policy_loss_and_gradients_equal_a_naive_reference() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let teacher = model(9, 32, 3, &dev);
    let student_ad = model(3, 16, 2, &ad);
    let student0 = student_ad.valid();
    let train = data(16);
    let rows = [0usize, 1, 2];
    for (div, tau) in [
        (OnPolicyDivergence::ReverseKl, 1.0),
        (OnPolicyDivergence::ReverseKl, 2.0),
        (OnPolicyDivergence::ForwardKl, 1.0),
        (OnPolicyDivergence::Jsd, 1.5),
    ] {
        let cfg =
            OnPolicySection { fraction: 1.0, max_new_tokens: 10, divergence: div, jsd_beta: 0.3, ..Default::default() };
        let r = rollout(&cfg, &student0, &train, &rows, &[EOS], (5, 0, 0), &dev, &ad);
        let [b, t] = r.batch.inputs.dims();
        let t_logits = teacher.forward(r.batch.inputs.clone().inner()).reshape([b * t, V]);
        let grads_of = |fused: bool| {
            let student = student_ad.clone();
            let h = student.forward_hidden(r.batch.inputs.clone());
            let loss = match fused {
                true => {
                    let kd = KdConfig { alpha: 0.0, temperature: tau, chunk_tokens: 16, divergence: cfg.divergence() };
                    let target = Some(Target::Full(Tensor::from_inner(t_logits.clone())));
                    let h = h.reshape([b * t, 16]);
                    kd_loss_fused_head(
                        h,
                        student.head_weight(),
                        target,
                        r.batch.targets.clone(),
                        r.batch.mask.clone(),
                        kd,
                    )
                    .total
                }
                false => {
                    let s_logits = student.logits_of(h).reshape([b * t, V]);
                    naive_loss(
                        s_logits,
                        Tensor::from_inner(t_logits.clone()),
                        r.batch.mask.clone(),
                        div,
                        cfg.jsd_beta,
                        tau,
                    )
                }
            };
            let value: f32 = loss.clone().into_scalar::<f32>();
            let g = loss.backward();
            let grad = |p: &burn::module::Param<Tensor<2>>| -> Vec<f32> {
                p.grad(&g).unwrap().into_data().convert::<f32>().try_to_vec().unwrap()
            };
            let crate::model::decoder::Mixer::Attention(a) = &student.blocks[1].mixer else { unreachable!() };
            (
                value,
                [
                    grad(&student.embed.weight),
                    grad(&a.wq.weight),
                    grad(&student.blocks[0].mlp.as_ref().unwrap().w_down.weight),
                ],
            )
        };
        let ((lf, gf), (ln, gn)) = (grads_of(true), grads_of(false));
        assert!((lf - ln).abs() < 1e-5 * ln.abs().max(1.0), "{div:?} tau {tau}: loss {lf} vs naive {ln}");
        assert!(ln > 1e-3, "{div:?}: a divergence to learn from");
        for (a, b) in gf.iter().zip(&gn) {
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(err < 1e-4 * scale.max(1e-3), "{div:?} tau {tau}: gradient error {err} of {scale}");
        }
    }
}

/// Which batches are on-policy is a draw per (seed, step, micro-batch): the share follows
/// `fraction`, and the same arguments give the same answer (a resumed run draws the same).
#[test]
fn the_on_policy_share_follows_fraction() {
    let cfg = OnPolicySection { fraction: 0.3, ..Default::default() };
    let n = (0..4000).filter(|&s| cfg.takes(11, s, 0)).count();
    assert!((n as f64 / 4000.0 - 0.3).abs() < 0.03, "{n} of 4000");
    assert!((0..50).all(|s| cfg.takes(11, s, 1) == cfg.takes(11, s, 1)));
    assert!((0..50).all(|s| OnPolicySection { fraction: 1.0, ..cfg.clone() }.takes(11, s, 0)));
    assert!((0..50).all(|s| !OnPolicySection { fraction: 0.0, ..cfg.clone() }.takes(11, s, 0)));
}

/// The policy evaluation against one prompt at a time: each prompt's greedy completion alone,
/// the teacher's full forward over it alone, log-softmax and argmax in f64 on the host.
#[test]
fn policy_eval_matches_one_prompt_at_a_time() {
    let dev = Device::flex();
    let (student, teacher) = (model(3, 16, 2, &dev), model(9, 32, 3, &dev));
    let valid = data(16);
    let got = super::eval::policy_eval(&student, &teacher, &valid, 3, 6, &[EOS], 2, &dev);
    let (mut sum, mut agree, mut n) = (0.0f64, 0usize, 0usize);
    for r in 0..3 {
        let (i, _, m) = valid.row(r);
        let p = prompt_of(&i, &m).unwrap();
        let mut seq = p.clone();
        let w = generate(&student, &p, EOS, &Sampling::greedy(6), &dev, |_| {});
        let stopped = w.len() < 6;
        seq.extend(&w);
        if stopped {
            seq.push(EOS);
        }
        let logits: Vec<f32> =
            teacher.forward(crate::model::token_tensor(&seq, &dev)).into_data().try_to_vec().unwrap();
        for pos in p.len() - 1..seq.len() - 1 {
            let row = &logits[pos * V..(pos + 1) * V];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            let next = seq[pos + 1] as usize;
            sum += row[next] as f64 - m - z.ln();
            agree += (row.iter().enumerate().fold(0, |b, (j, &x)| if x > row[b] { j } else { b }) == next) as usize;
            n += 1;
        }
    }
    assert_eq!(got.tokens, n);
    assert!((got.teacher_logprob - sum / n as f64).abs() < 1e-5, "{} vs {}", got.teacher_logprob, sum / n as f64);
    assert!((got.agreement - agree as f64 / n as f64).abs() < 1e-12);
}
